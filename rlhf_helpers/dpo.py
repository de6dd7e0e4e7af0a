"""DPO: alignment without a reward model in the loop (Rafailov et al. 2023, "Direct Preference Optimization").

The KL-regularized objective of notebooks 03–06, max_π E[r(x, y)] − β·KL(π ‖ π_ref), has a closed-form optimum

    π*(y|x) = π_ref(y|x) · exp(r(x, y) / β) / Z(x)    ⇔    r(x, y) = β · log π*(y|x)/π_ref(y|x) + β · log Z(x).

Put that r into the Bradley–Terry likelihood of notebook 06: Z(x) cancels in r(chosen) − r(rejected), and the reward
model disappears. The policy is fit to the preference pairs directly:

    L_DPO = −log σ( β · [ (log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x)) ] )

with log π(y|x) the **sum** of the response tokens' log-probs. β · (log π − log π_ref) is the *implicit reward*.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ppo import logprobs_from_logits
from .sampling import pack, response_logits


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
             ref_rejected_logps: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sigmoid DPO loss per pair, and the implicit rewards.

        losses           = −log σ(β · [(π_c − ref_c) − (π_r − ref_r)])
        chosen_rewards   = β · (π_c − ref_c)        rejected_rewards = β · (π_r − ref_r)

    Inputs are sequence log-probs (sums over response tokens), each (B,); outputs are (B,) each. The reference is
    detached (it is frozen: no gradient may flow into it), and so are the rewards (they are for logging)."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps.detach()
    rejected_logratios = policy_rejected_logps - ref_rejected_logps.detach()
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))  # logsigmoid: finite at any margin
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def sequence_logps(model, query_ids, response_ids, pad_id: int, temperature: float = 1.0) -> torch.Tensor:
    """log π(response | query) summed over the response tokens, one per row: (B,) on the model's device.

    The same path as PPO's log-probs (left-padded prompts, position ids from the mask, `response_logits`), so DPO and
    PPO score a response identically. Gradients flow when called outside `torch.no_grad()`."""
    batch = pack(query_ids, response_ids, pad_id).to(next(model.parameters()).device)
    logits, _ = response_logits(model, batch)
    logps = logprobs_from_logits(logits, batch.response_ids, temperature)  # (B, T)
    return (logps * batch.response_mask).sum(-1)
