"""Each objective's math on tiny tensors against the explicit formula, with a recording fake model."""

import pytest
import torch
from diffusers.training_utils import compute_snr

from diffit_hf import DiTModel
from diffit_hf.training.objectives import OBJECTIVES, DDPMObjective, EDMObjective, FlowObjective, make_objective


class Recorder(torch.nn.Module):
    """A fake model returning a fixed output and recording its inputs."""

    def __init__(self, out):
        super().__init__()
        self.out, self.calls = out, []

    def forward(self, x, t, y):
        self.calls.append((x, t, y))
        return type("Out", (), {"sample": self.out})()


def ddpm_draws(x0, seed=1):
    torch.manual_seed(seed)  # the objective's draws, explicitly: noise first, then t
    return torch.randn_like(x0), torch.randint(0, 1000, (x0.shape[0],))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddpm_objectives_noise_with_ddpm_and_regress_their_target(prediction_type):
    objective = DDPMObjective(prediction_type, learn_sigma=False)
    assert objective.scheduler.config.prediction_type == prediction_type
    x0, out = torch.randn(5, 4, 4, 4), torch.randn(5, 4, 4, 4)
    model = Recorder(out)
    torch.manual_seed(1)
    losses = objective.training_losses(model, x0, None)
    noise, t = ddpm_draws(x0)
    abar = objective.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x, t_seen, _ = model.calls[0]
    torch.testing.assert_close(t_seen, t)
    torch.testing.assert_close(x, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    target = noise if prediction_type == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0
    torch.testing.assert_close(losses["loss"], (out - target).square().mean())
    assert losses["vb"] == 0


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weighting(prediction_type):
    objective = DDPMObjective(prediction_type, learn_sigma=False, snr_gamma=5.0)
    x0, out = torch.randn(64, 1, 2, 2), torch.randn(64, 1, 2, 2)
    torch.manual_seed(1)
    losses = objective.training_losses(Recorder(out), x0, None)
    noise, t = ddpm_draws(x0)
    abar = objective.scheduler.alphas_cumprod[t]
    snr = abar / (1 - abar)
    weight = snr.clamp(max=5.0) / (snr if prediction_type == "epsilon" else snr + 1)
    torch.testing.assert_close(compute_snr(objective.scheduler, t), snr)
    abar = abar.view(-1, 1, 1, 1)
    target = noise if prediction_type == "epsilon" else abar.sqrt() * noise - (1 - abar).sqrt() * x0
    torch.testing.assert_close(losses["loss"], ((out - target).square().mean(dim=(1, 2, 3)) * weight).mean())
    # the logged mse stays the plain MSE (comparable with an unweighted run); only the loss is weighted
    torch.testing.assert_close(losses["mse"], (out - target).square().mean())
    assert not torch.allclose(losses["mse"], losses["loss"])


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_flow_objective_is_the_linear_interpolant_with_a_velocity_target(sampling):
    objective = FlowObjective(timestep_sampling=sampling, logit_mean=0.5, logit_std=0.7)
    x0, out = torch.randn(6, 4, 4, 4), torch.randn(6, 4, 4, 4)
    model = Recorder(out)
    torch.manual_seed(1)
    losses = objective.training_losses(model, x0, None)
    torch.manual_seed(1)
    noise = torch.randn_like(x0)
    t = torch.rand(6) if sampling == "uniform" else torch.sigmoid(0.5 + 0.7 * torch.randn(6))
    x, t_seen, _ = model.calls[0]
    torch.testing.assert_close(t_seen, 1000 * t)  # the timestep embedding's 0..1000 scale
    t = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(x, (1 - t) * x0 + t * noise)
    torch.testing.assert_close(losses["loss"], (out - (noise - x0)).square().mean())
    # the sampler integrates the same velocity: one Euler step from sigma to sigma' moves by (sigma' - sigma) * v
    scheduler = objective.pipeline_scheduler()
    scheduler.set_timesteps(4)
    sigma, nxt = scheduler.sigmas[0], scheduler.sigmas[1]
    x_s = (1 - sigma) * x0 + sigma * noise
    stepped = scheduler.step(noise - x0, scheduler.timesteps[0], x_s).prev_sample
    torch.testing.assert_close(stepped, (1 - nxt) * x0 + nxt * noise, rtol=1e-5, atol=1e-5)


def test_edm_objective_preconditions_and_weights_as_karras_et_al():
    objective = EDMObjective()
    x0, out = torch.randn(6, 3, 4, 4) * 0.5, torch.randn(6, 3, 4, 4)
    model = Recorder(out)
    torch.manual_seed(1)
    losses = objective.training_losses(model, x0, None)
    torch.manual_seed(1)
    noise = torch.randn_like(x0)
    sigma = torch.exp(-1.2 + 1.2 * torch.randn(6))
    x_in, t_seen, _ = model.calls[0]
    torch.testing.assert_close(t_seen, 1000 * torch.log(sigma) / 4)  # c_noise on the embedder's scale
    s = sigma.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_in, (x0 + s * noise) / (s**2 + 0.25).sqrt())  # c_in x
    denoised = 0.25 / (s**2 + 0.25) * (x0 + s * noise) + s * 0.5 / (s**2 + 0.25).sqrt() * out
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    torch.testing.assert_close(losses["loss"], (weight * (denoised - x0).square().mean(dim=(1, 2, 3))).mean())
    # diffusers' EDM sampler combines the model output with the same c_skip / c_out
    scheduler = objective.pipeline_scheduler()
    torch.testing.assert_close(scheduler.precondition_outputs(x0 + s * noise, out, s), denoised)
    with pytest.raises(ValueError, match="no learned variance"):
        make_objective("edm", learn_sigma=True)


def test_learned_sigma_adds_the_vb_term_and_bad_combinations_are_refused():
    objective = make_objective("epsilon", learn_sigma=True)
    assert objective.scheduler.config.variance_type == "learned_range"
    model = DiTModel(sample_size=4, patch_size=2, in_channels=4, num_layers=1, num_attention_heads=1,
                     attention_head_dim=8, num_classes=0)
    with torch.no_grad():
        losses = objective.training_losses(model, torch.randn(3, 4, 4, 4), None)
    assert losses["vb"] > 0 and losses["loss"] == pytest.approx((losses["mse"] + losses["vb"]).item())
    with pytest.raises(ValueError, match="valid choices are epsilon, v_prediction, flow, edm"):
        make_objective("eps")
    with pytest.raises(ValueError, match="Only the epsilon objective learns sigma"):
        make_objective("v_prediction", learn_sigma=True)
    with pytest.raises(ValueError, match="no learned variance"):
        make_objective("flow", learn_sigma=True)
    with pytest.raises(ValueError, match="min-SNR"):
        make_objective("flow", snr_gamma=5.0)
    with pytest.raises(ValueError, match="applies to the flow objective"):
        make_objective("epsilon", timestep_sampling="logit_normal")
    with pytest.raises(ValueError, match="needs 8"):  # a model without sigma channels for a learned-sigma objective
        make_objective("epsilon", learn_sigma=True).training_losses(Recorder(torch.zeros(2, 4, 2, 2)),
                                                                    torch.randn(2, 4, 2, 2), None)


def test_logit_normal_parameters_are_refused_where_they_do_nothing():
    for name, sampling in (("epsilon", "uniform"), ("edm", "uniform"), ("flow", "uniform")):
        with pytest.raises(ValueError, match="apply only with objective 'flow' and timestep_sampling 'logit_normal'"):
            make_objective(name, timestep_sampling=sampling, logit_mean=0.5)
        with pytest.raises(ValueError, match="--logit-std"):
            make_objective(name, timestep_sampling=sampling, logit_std=2.0)
    objective = make_objective("flow", timestep_sampling="logit_normal", logit_mean=0.5, logit_std=2.0)
    assert (objective.logit_mean, objective.logit_std) == (0.5, 2.0)


def test_train_latent_help_names_every_objective(script):
    from dataclasses import fields

    help_text = {f.name: f.metadata.get("help", "") for f in fields(script("training/train_latent.py").TrainConfig)}
    assert all(name in help_text["objective"] for name in OBJECTIVES), help_text["objective"]


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_sigma_data_is_the_same_in_training_and_in_the_saved_sampler(sigma_data):
    objective = make_objective("edm", sigma_data=sigma_data)
    scheduler = objective.pipeline_scheduler()
    assert objective.sigma_data == scheduler.config.sigma_data == sigma_data
    x0, out = torch.randn(6, 3, 4, 4) * sigma_data, torch.randn(6, 3, 4, 4)
    model = Recorder(out)
    torch.manual_seed(1)
    losses = objective.training_losses(model, x0, None)
    torch.manual_seed(1)
    noise = torch.randn_like(x0)
    s = torch.exp(-1.2 + 1.2 * torch.randn(6)).view(-1, 1, 1, 1)
    x_in, _, _ = model.calls[0]
    # the model input and the denoiser of training are the sampler's preconditioning
    torch.testing.assert_close(x_in, scheduler.precondition_inputs(x0 + s * noise, s))
    denoised = scheduler.precondition_outputs(x0 + s * noise, out, s)
    weight = (s**2 + sigma_data**2) / (s * sigma_data) ** 2
    torch.testing.assert_close(losses["loss"], (weight * (denoised - x0).square()).mean())


def test_edm_sigma_data_is_refused_where_it_does_nothing_or_is_not_a_std():
    for name in ("epsilon", "flow"):
        with pytest.raises(ValueError, match="applies to the edm objective"):
            make_objective(name, sigma_data=1.0)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="sigma_data must be a positive finite number"):
            make_objective("edm", sigma_data=bad)
