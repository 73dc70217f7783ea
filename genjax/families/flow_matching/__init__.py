"""Flow matching: a velocity field trained by conditional flow matching,
sampled by integrating its ODE from noise (t = 0) to data (t = 1), with a
likelihood by the instantaneous change of variables.

The probability path (`flow_matching.path`) and loss are in `paths`; the
network (diffusion's U-Net, DiT or MLP) and the data maps in `model`. The
Euler / Heun / RK4 samplers and the ODE likelihood are the shared ones in
`genjax.ode`.
Class labels drop to the null class with probability `p_uncond`, so one
network is conditional and unconditional, and sampling uses classifier-free
guidance (`sample.guidance`). An EMA of the parameters samples and evaluates.

Eval 'nll' is -log p(x) of the unconditional model (the null label), by RK4
over `eval_steps` steps or dopri5 to a tolerance (`eval_solver`; 'ode_evals'
the field evaluations per example), the divergence exact or by Hutchinson's
estimator (`divergence`, `probes`; 'nll_se' is the estimator's standard
error). `sample.solver='dopri5'` samples adaptively to `sample.rtol` and
`sample.atol`; tools['draw'] returns the evaluations it took. Images
are uniformly dequantised, so there the 'nll' is the dequantised bound; for
points it is the ODE's exact density, up to the solver's error.
tools['complete'] fills missing pixels of images by the ODE guided towards the
known ones (`paths.inpainting_field`).
"""
import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

from genjax import optim
from genjax.families import base
from genjax.families import diffusion
from genjax.families.flow_matching import model, paths
from genjax.ode import likelihood, solvers

MODALITIES = ('image', 'points')
POSITIVE = ('model.num_res_blocks', 'model.patch', 'sample.steps', 'flow_matching.eval_steps',
            'flow_matching.probes')
NON_NEGATIVE = ('sample.guidance', 'flow_matching.p_uncond', 'sample.rtol', 'sample.atol',
                'flow_matching.eval_rtol', 'flow_matching.eval_atol')
DEQUANTISED = 'dequantised bound'


def config_problems(config):
  out, fm = [], config.flow_matching
  for field, value, allowed in (('flow_matching.path', fm.get('path'), paths.PATHS),
                                ('flow_matching.divergence', fm.get('divergence'),
                                 likelihood.DIVERGENCES),
                                ('sample.solver', config.sample.get('solver'), solvers.SOLVERS),
                                ('flow_matching.eval_solver', fm.get('eval_solver', 'rk4'),
                                 solvers.SOLVERS)):
    if value not in allowed:
      out.append(f'{field}={value!r}: one of {allowed}')
  return out


def data_problems(config, info, num_devices=1):
  """The same networks as diffusion, so the same limits on image sides."""
  return diffusion.data_problems(config, info, num_devices)


@flax.struct.dataclass
class FlowMatchingState:
  step: jnp.ndarray
  params: dict
  opt_state: tuple
  ema_params: dict  # used by sample and eval_step


def build(config, info):
  fm, sc = config.flow_matching, config.sample
  net = model.make_network(config.model, info)
  num_classes = net.num_classes
  null = num_classes  # the label of the unconditional model
  is_image = info.modality == 'image'
  data_key = 'image' if is_image else 'x'
  point_scale = fm.get('point_scale', 1.0)
  tx, lr_schedule = optim.make_optimizer(config.optim, config.train.num_steps)
  to_model = functools.partial(model.to_model_space, info=info, point_scale=point_scale)

  def init(rng, batch):
    x = to_model(batch, keys=base.example_keys(rng, 1))[0][:1]
    label = jnp.zeros((1,), jnp.int32) if num_classes else None
    params = jax.jit(functools.partial(net.init, train=False))(
        rng, x, jnp.ones((1,), jnp.float32), label)['params']
    return FlowMatchingState(step=jnp.zeros((), jnp.int32), params=params,
                             opt_state=tx.init(params), ema_params=params)

  def train_step(state, batch, rng):
    keys = base.example_keys(rng, batch[data_key].shape[0])
    x1, _ = to_model(batch, keys=keys)
    t, x0 = paths.draw(keys, x1.shape[1:])
    label = batch['label'].astype(jnp.int32) if num_classes else None
    if label is not None:  # drop labels: one network is conditional and unconditional
      drop = jax.vmap(lambda k: jax.random.bernoulli(jax.random.fold_in(k, 2), fm.p_uncond))(keys)
      label = jnp.where(drop, null, label)

    def loss_fn(params, b):
      dropout_rng = base.device_key(jax.random.fold_in(rng, 1))
      v = lambda x, t_B: model.velocity(net, params, x, t_B, b['label'], True, dropout_rng)
      return paths.cfm_loss(v, fm.path, b['x1'], b['t'], b['x0'])

    params, opt_state, metrics, _ = base.update(
        loss_fn, state.params, state.opt_state, tx, batch=dict(x1=x1, t=t, x0=x0, label=label),
        microbatches=base.microbatches(config))
    ema_params = base.ema(state.ema_params, params, fm.ema_decay, state.step)
    metrics['lr'] = lr_schedule(state.step)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         ema_params=ema_params), metrics

  def log_density(params, batch, keys, label):
    """(log p(x) in data units (B,), standard error (B,), field evaluations)."""
    y, log_jac = to_model(batch, keys=keys)
    field, _ = model.guided(net, params, label, 0.0 if label is None else 1.0, null)
    probes = likelihood.probes_for(fm.divergence, keys, fm.probes, y.shape[1:], salt=4)
    log_p, se, evals = likelihood.log_likelihood(
        field, y, steps=fm.eval_steps, divergence=fm.divergence, probes_KxB=probes,
        solver=fm.get('eval_solver', 'rk4'), rtol=fm.get('eval_rtol', 1e-5),
        atol=fm.get('eval_atol', 1e-5))
    return log_p + log_jac, se, evals

  def eval_step(state, batch, rng):
    B, mask = batch['mask'].shape[0], batch['mask'].astype(jnp.float32)
    keys = base.example_keys(rng, B)
    null_label = jnp.full((B,), null, jnp.int32) if num_classes else None
    log_p, se, evals = log_density(state.ema_params, batch, keys, null_label)
    D = int(np.prod(info.shape))
    return dict(nll=(-log_p * mask).sum(), nll_se=(se * mask).sum(), dims=mask.sum() * D,
                examples=mask.sum(), ode_evals=evals * mask.sum())

  @functools.partial(jax.jit, static_argnames=('solver', 'steps', 'scale', 'num', 'keep_path',
                                                'rtol', 'atol'))
  def integrate(params, rng, label, solver, steps, scale, num, keep_path=False, rtol=None,
                atol=None):
    """(x at t = 1, the trajectory or None, solver evaluations) in model space;
    dopri5's tolerances default to the config's."""
    field, _ = model.guided(net, params, label, scale, null)
    x0 = jax.random.normal(rng, (num,) + tuple(info.shape))
    return solvers.solve(field, x0, solver=solver, steps=steps, keep_path=keep_path,
                         rtol=sc.get('rtol', 1e-5) if rtol is None else rtol,
                         atol=sc.get('atol', 1e-5) if atol is None else atol)

  def generate(params, rng, label, solver, steps, scale, num, keep_path=False, rtol=None,
               atol=None):
    """(x at t = 1, the trajectory or None) in model space."""
    return integrate(params, rng, label, solver, steps, scale, num, keep_path, rtol, atol)[:2]

  def sample_labels(num):
    return jnp.arange(num, dtype=jnp.int32) % num_classes if num_classes else None

  def passes(scale):
    """Network passes per solver evaluation: 2 when guided."""
    return 2 if num_classes and scale not in (0, 1) else 1

  def nfe(solver=None, steps=None, scale=None):
    """Network evaluations per sample; None for dopri5, whose count is known
    once it has drawn (`draw` returns it)."""
    evals = solvers.network_evals(solver or sc.solver, steps or sc.steps)
    return None if evals is None else passes(sc.guidance if scale is None else scale) * evals

  def draw(state, rng, num_samples, solver=None, steps=None, scale=None, rtol=None, atol=None):
    """(samples as `sample` returns them, the network evaluations each took):
    the solver's own count (for dopri5, from its steps tried), times the
    passes per evaluation."""
    label = sample_labels(num_samples)
    scale = sc.guidance if scale is None else float(scale)
    x, _, evals = integrate(state.ema_params, rng, label, solver or sc.solver,
                            steps or sc.steps, scale, num_samples, rtol=rtol, atol=atol)
    out = {data_key: model.to_output(x, info, point_scale)}
    if num_classes:
      out['label'] = np.asarray(label)
    return out, passes(scale) * int(evals)

  def sample(state, rng, num_samples, solver=None, steps=None, scale=None, rtol=None, atol=None):
    return draw(state, rng, num_samples, solver, steps, scale, rtol, atol)[0]

  def sampler_settings(step_counts=(2, 10), full_chain=False):
    """(label, `sample` keyword arguments, network evaluations per sample): Euler
    at each step count and, with full_chain, RK4 at the largest."""
    out = [(f'Euler {n}', dict(solver='euler', steps=n), nfe('euler', n)) for n in step_counts]
    if full_chain and step_counts:
      n = max(step_counts)
      out.append((f'RK4 {n}', dict(solver='rk4', steps=n), nfe('rk4', n)))
    return out

  _log_prob = jax.jit(lambda params, x, keys: log_density(params, {'x': x}, keys, None)[0])

  def log_prob(state, x):
    """(N,) log-densities of points (the unconditional model)."""
    x = jnp.asarray(x, jnp.float32)
    return np.asarray(_log_prob(state.ema_params, x, base.example_keys(jax.random.PRNGKey(0),
                                                                         x.shape[0])))

  # network_evals: None under dopri5 (see nfe).
  tools = dict(generate=generate, draw=draw, nfe=nfe, network_evals=nfe(),
               sampler_settings=sampler_settings,
               sample_labels=sample_labels,
               to_output=functools.partial(model.to_output, info=info, point_scale=point_scale))
  if not is_image:
    tools['log_prob'] = log_prob
  else:
    @functools.partial(jax.jit, static_argnames=('solver', 'steps'))
    def _inpaint(params, rng, y, known, solver, steps):
      label = jnp.full((y.shape[0],), null, jnp.int32) if num_classes else None
      field, _ = model.guided(net, params, label, 0.0, null)
      x0 = jax.random.normal(rng, y.shape)
      return solvers.solve(paths.inpainting_field(field, fm.path, y, known), x0, solver=solver,
                           steps=steps, rtol=sc.get('rtol', 1e-5), atol=sc.get('atol', 1e-5))[0]

    def complete(state, rng, images, known_mask):
      """Fills the pixels where `known_mask` is False: the unconditional model's
      ODE from noise, guided towards the known pixels (at the middles of their
      grey levels) by `paths.inpainting_field`, with the config's sampler; the
      known pixels are returned as given."""
      L = info.num_levels
      y = (np.asarray(images, np.float32) + 0.5) * (2.0 / L) - 1.0
      x = _inpaint(state.ema_params, rng, jnp.asarray(y), jnp.asarray(known_mask), sc.solver,
                   sc.steps)
      return np.where(known_mask, images, model.to_output(x, info, point_scale))

    tools['complete'] = complete
  return base.Family(name='flow_matching', init=init, train_step=train_step, eval_step=eval_step,
                     sample=sample, likelihood='bound' if is_image else 'exact',
                     likelihood_note=DEQUANTISED if is_image else '', state_fields=('model',),
                     tools=tools)
