#!/usr/bin/env bash
# Measure every shipped study again, in dependency order, and copy each result where the notebooks read it
# (rlhf_helpers/results/<study>_<profile>.json). The DPO sweep, the GRPO, over-optimization and frontier sweeps reuse
# their finished runs in $OUT, so an interrupted regeneration mostly continues where it stopped. Hours on 2 CPU cores
# for the smoke profile: run it in the background.
#
#     bash benchmarks/regenerate_results.sh smoke runs/results > runs/results.log 2>&1 &
#
# The DPO learning-rate sweep comes first: the profile's DPO settings (rlhf_helpers/profiles.py) must be set to its
# choice before the frontier and the other studies run DPO, so the script stops after it when they differ.
set -euo pipefail
PROFILE=${1:-smoke}
OUT=${2:-runs/results}
RESULTS=rlhf_helpers/results
mkdir -p "$OUT"

python benchmarks/dpo_learning_rate.py --profile "$PROFILE" --out "$OUT/dpo_lr"
cp "$OUT/dpo_lr/dpo_learning_rate.json" "$RESULTS/dpo_learning_rate_$PROFILE.json"
python - "$PROFILE" "$RESULTS/dpo_learning_rate_$PROFILE.json" <<'PY'
import json, sys
from rlhf_helpers import get_profile
from rlhf_helpers.dpo import dpo_learning_rate
profile, choice = get_profile(sys.argv[1]), json.load(open(sys.argv[2]))["choice"]
if (choice["learning_rate"], choice["epochs"]) != (dpo_learning_rate(profile), profile.dpo.epochs):
    sys.exit(f"The sweep chose DPO learning rate {choice['learning_rate']:g} and {choice['epochs']} epochs; the "
             f"{sys.argv[1]} profile has {dpo_learning_rate(profile):g} and {profile.dpo.epochs}. Set them in "
             f"rlhf_helpers/profiles.py and run this script again (finished runs are reused).")
PY

python benchmarks/kl_control.py --profile "$PROFILE" --out "$OUT/kl_control"
cp "$OUT/kl_control/kl_control.json" "$RESULTS/kl_control_$PROFILE.json"

python benchmarks/sft_longer.py --profile "$PROFILE" --out "$OUT/sft_longer"
cp "$OUT/sft_longer/sft_longer.json" "$RESULTS/sft_longer_$PROFILE.json"

python benchmarks/grpo_positions.py --profile "$PROFILE" --seeds 0,1,2 --out "$OUT/grpo_positions"
cp "$OUT/grpo_positions/grpo_positions.json" "$RESULTS/grpo_positions_$PROFILE.json"

python benchmarks/overoptimization_seeds.py --profile "$PROFILE" --seeds 0,1,2 --out "$OUT/overopt_seeds"
cp "$OUT/overopt_seeds/overoptimization.json" "$RESULTS/overoptimization_$PROFILE.json"

python benchmarks/frontier.py --profile "$PROFILE" --out "$OUT/frontier"
cp "$OUT/frontier/frontier.json" "$RESULTS/frontier_$PROFILE.json"
echo "All studies measured again; results in $RESULTS."
