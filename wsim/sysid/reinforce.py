"""Method ``pybullet``: the PyBullet + REINFORCE baseline of gradSim Table 1 (App. H.1, Table 5).

A non-differentiable simulator made "trivially differentiable" by a score-function gradient. The same
body as the instance's flies in PyBullet (a multibody without collision shape: there is no ground, so
its mesh plays no part): mass and principal inertia are wsim's mass properties scaled by the candidate
density, and the initial centre-of-mass position, orientation, linear and angular velocity, gravity and
the push (the same force at the same body-frame point on the same physics steps, world frame) are
wsim's; it steps at wsim's ``dt`` and the pose is read every ``substeps`` steps. Each frame's vertices
are the body-frame surface vertices placed by that pose, and **wsim's renderer draws them, without
gradients**: it is only an image maker here, the same one that drew the target, so renderer differences
do not confound the comparison; what is compared is the gradient estimate (and PyBullet's physics).

REINFORCE (Williams 1992) as App. H.1 says: a Gaussian policy ``N(mu, noise^2)`` on the parameter in its
optimisation space (log density: the noise is relative), ``samples`` draws a step, the reward of a draw
minus the sum of its per-frame L2 (mean squared) losses against the target frames, the rewards
normalised over the draws and multiplied by a reward decay (1 at the start, times ``decay`` after each
step), Adam on ``mu`` minimising ``-mean(reward * log pi(draw))``. ``reinforce.*`` holds Table 5's
values. Every step also renders ``mu`` itself once: that loss is the run's history, the estimate is the
lowest-loss ``mu`` (as for the other methods), and :meth:`Optimisation.convergence` plus the noise check
of :func:`wsim.sysid.experiment.judged` decide ``done``, as for every method.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..errors import ConfigError
from ..geometry.transforms import matrix_quaternion, quaternion_multiply
from ..harness import progress_bar
from .metrics import short, summary_of
from .optimisation import Optimisation
from .spaces import from_space, space_bounds, to_space


class PyBulletBody:
    """The instance's single free rigid body in a PyBullet DIRECT world; :meth:`poses` and
    :meth:`vertices` roll it out at a density."""

    def __init__(self, instance):
        import pybullet

        self.pb = pybullet
        model, sim, config = instance.scene.model, instance.sim, instance.config
        if model.body_count != 1 or model.particle_count or getattr(model, "rotor_count", 0) or model.ground:
            raise ConfigError("method pybullet simulates one free rigid body: a scene with a single body, no ground, "
                              "no particles and no rotors")
        if [p.name for p in config.params] != ["density"] or config.appearance.estimate:
            raise ConfigError("method pybullet estimates params [density] only, with no appearance.estimate")
        if config.loss.type != "pixel":
            raise ConfigError(f"method pybullet uses the pixel loss of App. H.1, not loss.type {config.loss.type}")
        for name in ("control_body_force", "control_body_torque"):
            if name in model.defaults and np.any(np.asarray(model.defaults[name]) != 0):
                raise ConfigError(f"method pybullet does not apply {name}")
        self.dt, self.substeps, self.steps = sim.dt, sim.substeps, sim.steps
        self.torch_device = instance.torch_device
        self.volume = float(model.body_volume[0])
        # PyBullet takes a diagonal inertia: its body frame is wsim's rotated onto the principal axes
        # (unit_inertia = axes diag(principal) axes^T; the axes do not depend on the density)
        self.principal, axes = np.linalg.eigh(np.asarray(model.body_unit_inertia[0], dtype=np.float64))
        if np.linalg.det(axes) < 0:
            axes[:, 2] = -axes[:, 2]
        self.axes = axes
        first = {k: sim.default(k).cpu().numpy()[0].astype(np.float64) for k in
                 ("body_position", "body_rotation", "body_velocity", "body_angular_velocity", "body_push_force")}
        self.position, self.velocity = first["body_position"], first["body_velocity"]
        self.angular_velocity, self.push_force = first["body_angular_velocity"], first["body_push_force"]
        self.orientation = quaternion_multiply(first["body_rotation"], matrix_quaternion(axes))
        self.push_point = model.body_push_point.numpy()[0].astype(np.float64)  # body frame, from the COM
        self.push_steps = (int(model.body_push_start_step.numpy()[0]), int(model.body_push_end_step.numpy()[0]))
        self.gravity = sim.default("gravity").cpu().numpy().reshape(-1, 3)[0].astype(np.float64)
        self.surface = model.shape_vertices.numpy().astype(np.float64)  # body frame, from the COM
        self.client = pybullet.connect(pybullet.DIRECT)

    def __del__(self):
        self.close()

    def close(self) -> None:
        if getattr(self, "client", None) is not None is not None and self.pb.isConnected(self.client):
            self.pb.disconnect(self.client)
        self.client = None

    def _rotation(self, quat) -> np.ndarray:
        """wsim's body-to-world rotation from PyBullet's principal-frame orientation."""
        return np.asarray(self.pb.getMatrixFromQuaternion(quat), dtype=np.float64).reshape(3, 3) @ self.axes.T

    def poses(self, density: float) -> tuple[np.ndarray, np.ndarray]:
        """Centre-of-mass positions ``[F, 3]`` and body-to-world rotations ``[F, 3, 3]`` of every frame."""
        pb, c = self.pb, self.client
        pb.resetSimulation(physicsClientId=c)
        pb.setGravity(*self.gravity, physicsClientId=c)
        pb.setPhysicsEngineParameter(fixedTimeStep=self.dt, numSubSteps=0, physicsClientId=c)
        # a multibody: its base frame is the centre of mass (maximal coordinates would make a massless
        # shape-less body static); PyBullet's default damping (0.04) is off, wsim's body has none
        body = pb.createMultiBody(baseMass=density * self.volume, basePosition=self.position.tolist(),
                                  baseOrientation=self.orientation.tolist(), physicsClientId=c)
        pb.changeDynamics(body, -1, localInertiaDiagonal=(density * self.principal).tolist(), linearDamping=0.0,
                          angularDamping=0.0, physicsClientId=c)
        pb.resetBaseVelocity(body, self.velocity.tolist(), self.angular_velocity.tolist(), physicsClientId=c)
        positions, rotations = [], []
        for step in range(self.steps + 1):
            x, q = pb.getBasePositionAndOrientation(body, physicsClientId=c)
            if step % self.substeps == 0:
                positions.append(np.asarray(x, dtype=np.float64))
                rotations.append(self._rotation(q))
            if step == self.steps:
                break
            if self.push_steps[0] <= step < self.push_steps[1]:
                # as wsim: the force at the push point placed by the pose at the start of the step
                point = np.asarray(x) + self._rotation(q) @ self.push_point
                pb.applyExternalForce(body, -1, self.push_force.tolist(), point.tolist(), pb.WORLD_FRAME,
                                      physicsClientId=c)
            pb.stepSimulation(physicsClientId=c)
        return np.stack(positions), np.stack(rotations)

    def vertices(self, density: float) -> torch.Tensor:
        """World-space surface vertices ``[F, V, 3]`` (float32), as :meth:`Simulation.rollout` returns them."""
        positions, rotations = self.poses(density)
        world = positions[:, None, :] + np.einsum("fij,vj->fvi", rotations, self.surface)
        return torch.as_tensor(world, dtype=torch.float32, device=self.torch_device)


def frame_losses(instance, vertices: torch.Tensor) -> torch.Tensor:
    """The mean squared RGB difference of each loss frame against the target (no gradients)."""
    index = torch.as_tensor(instance.loss_frames, device=instance.torch_device)
    with torch.no_grad():
        rgb = instance.render(vertices[index])[..., :3]
        return ((rgb - instance.target_images[index]) ** 2).mean(dim=(1, 2, 3))


def surrogate_gradient(mean: torch.Tensor, draws: torch.Tensor, rewards: torch.Tensor, noise: float,
                       decay: float = 1.0) -> torch.Tensor:
    """The gradient w.r.t. the policy mean of the REINFORCE loss ``-mean(A_i log N(draw_i; mean, noise^2))``
    for ``draws`` ``[S, ...]`` with ``rewards`` ``[S]``: ``A`` are the rewards normalised over the draws
    (zero mean, unit deviation) times ``decay``. Descending it raises the expected reward."""
    advantage = (rewards - rewards.mean()) / (rewards.std() + 1e-12) * decay
    mu = mean.detach().clone().requires_grad_(True)
    log_prob = torch.distributions.Normal(mu, noise).log_prob(draws).reshape(len(draws), -1).sum(dim=1)
    (-(advantage.detach() * log_prob).mean()).backward()
    return mu.grad


class Reinforce(Optimisation):
    """REINFORCE on the policy mean with PyBullet rollouts; shares :class:`Optimisation`'s convergence
    verdict (the plateau rule over the history of the mean's loss, the tolerance stop)."""

    def __init__(self, instance):
        self.instance = instance
        self.label, self.fixed = None, ()
        self.settings = instance.config.reinforce
        self.param = instance.params[0]
        self.mean = to_space(self.param, instance.initial[self.param.name]).clone().requires_grad_(True)
        self.lr = self.settings.lr
        self.optimizer = torch.optim.Adam([self.mean], lr=self.settings.lr)
        self.reward_decay = 1.0
        self.rng = torch.Generator().manual_seed(int(instance.seed) * 7919 + 3)  # the draws of this seed
        self.body = PyBulletBody(instance)
        self.iteration, self.evaluations, self.blowups, self.elapsed = 0, 0, 0, 0.0
        self.history: list[dict] = []
        self.best: tuple[float, dict] | None = None
        self.status, self.stopped_by = "running", None

    @property
    def total(self) -> int:
        return self.settings.iterations

    def method(self) -> str:
        return "reinforce"

    def values(self, detach: bool = False) -> dict:
        return {self.param.name: from_space(self.param, self.mean.detach())}

    def losses(self, u: torch.Tensor) -> torch.Tensor:
        """The per-frame losses of the value at ``u`` (optimisation space), from a PyBullet rollout."""
        self.evaluations += 1
        density = float(from_space(self.param, u.detach()).mean())
        return frame_losses(self.instance, self.body.vertices(density))

    def evaluate_mean(self) -> float:
        """The loss of the current mean over the whole video; it is the history and the best estimate."""
        loss = float(self.losses(self.mean).mean())
        if math.isfinite(loss) and (self.best is None or loss < self.best[0]):
            self.best = (loss, self.values())
        return loss

    def step(self) -> float:
        loss = self.evaluate_mean()
        s = self.settings
        shape = (s.samples,) + tuple(self.mean.shape)
        draws = self.mean.detach().cpu() + s.noise * torch.randn(shape, generator=self.rng, dtype=torch.float64).float()
        draws = draws.to(self.mean.device)
        rewards = torch.stack([-self.losses(u).sum() for u in draws])
        self.optimizer.zero_grad()
        self.mean.grad = surrogate_gradient(self.mean, draws, rewards, s.noise, self.reward_decay)
        self.optimizer.step()
        bounds = space_bounds(self.param)
        if bounds is not None:
            with torch.no_grad():
                self.mean.clamp_(*bounds)
        self.reward_decay *= s.decay
        return loss

    def run(self, checkpoint=None, progress: bool = True) -> None:
        """``settings.iterations`` steps (no checkpoints: a run is minutes and restarts from its seed)."""
        config = self.instance.config
        bar = progress_bar(self.total, f"{config.name} seed {self.instance.seed} reinforce", 0, progress)
        try:
            while self.iteration < self.total and self.stopped_by is None:
                started = time.perf_counter()
                before = self.values()
                loss = self.step()
                self.history.append({"iteration": self.iteration, "loss": loss, "full": True,
                                     "values": {k: summary_of(v) for k, v in before.items()}})
                self.iteration += 1
                self.elapsed += time.perf_counter() - started
                bar.set_postfix_str(f"loss={loss:.3e} {self.param.name}={short(self.values()[self.param.name])}")
                bar.update(1)
                if config.optim.tolerance > 0 and self.best is not None and self.best[0] < config.optim.tolerance:
                    self.stopped_by = "tolerance"
        finally:
            bar.close()
        self.evaluate_mean()  # the last step's mean, so the estimate is the best of every mean evaluated
        self.status = "done" if self.convergence()["converged"] else "not_converged"

    def convergence(self) -> dict:
        """:meth:`Optimisation.convergence`, its hint naming this method's budget."""
        verdict = super().convergence()
        return dict(verdict, reason=verdict["reason"].replace("optim.iterations or optim.polish_iterations",
                                                              "reinforce.iterations"))

    def estimate(self) -> dict:
        return self.values() if self.best is None else self.best[1]

    def record(self) -> dict:
        """What ``results.json`` adds under ``reinforce``: the settings, the final policy mean, and the
        PyBullet loss at the truth (diagnostic only, never used by the estimate): the floor that the
        difference between the two engines leaves under the estimate's loss."""
        truth = self.instance.truth
        at_truth = None
        if truth is not None:
            density = float(truth[self.param.name].mean())
            at_truth = float(frame_losses(self.instance, self.body.vertices(density)).mean())
        self.body.close()  # the last use of the PyBullet world
        return {**self.settings.model_dump(), "final_mean": {k: summary_of(v) for k, v in self.values().items()},
                "final_reward_decay": self.reward_decay, "pybullet_loss_at_truth": at_truth,
                "renderer": "wsim SoftRenderer, no gradients (an image maker only)"}

    def save(self, path) -> None:  # the harness's checkpoint hook: REINFORCE runs are not checkpointed
        pass
