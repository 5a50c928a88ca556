"""Drawing recorded episodes as RGB frames, on the host.

A :class:`Drawer` has two halves:

* ``view(inner_state, obs)`` picks from ONE environment's adapter state what a frame needs
  (jittable: a scan records it per step instead of whole states, e.g. ``(x, theta)`` of
  CartPole, the MinAtar grid, MuJoCo's ``qpos``);
* ``draw(views)`` turns one episode's views, stacked on a leading time axis (numpy), into
  ``uint8`` RGB frames ``[T, H, W, 3]``.

Classic control is drawn with matplotlib (world coordinates of :data:`SCENES`, mapped linearly
to pixels, y up), MinAtar and Catch as coloured grids (one colour per MinAtar channel, the
highest lit channel on top, as in gymnax's and MinAtar's visualisers), linear systems as a plot
of the state so far, brax and Playground (dmc) with ``mujoco.Renderer``, which needs an OpenGL
backend (``MUJOCO_GL=egl`` or ``osmesa``); without one :func:`make_drawer` raises
:class:`DrawError`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

SUPPORTED = ("gymnax/CartPole-v1", "gymnax/Pendulum-v1", "gymnax/Acrobot-v1",
             "gymnax/MountainCar-v0", "gymnax/MountainCarContinuous-v0", "gymnax/*-MinAtar",
             "gymnax/Catch-bsuite", "linear/*", "brax/*", "dmc/*")

DPI = 100
# Classic-control scenes: (width px, height px, x limits, y limits) in world units, same scale
# on both axes (width / x span == height / y span).
SCENES = {
    "CartPole-v1": (600, 300, (-3.0, 3.0), (-1.0, 2.0)),
    "Pendulum-v1": (300, 300, (-1.3, 1.3), (-1.3, 1.3)),
    "Acrobot-v1": (300, 300, (-2.3, 2.3), (-2.3, 2.3)),
    "MountainCar-v0": (450, 300, (-1.2, 0.6), (-0.05, 1.15)),
    "MountainCarContinuous-v0": (450, 300, (-1.2, 0.6), (-0.05, 1.15)),
}
_GRID_CELL = 24  # pixels per MinAtar / Catch cell
_MUJOCO_SIZE = (240, 320)  # height, width


class NoDrawerError(ValueError):
    """The environment has no drawer."""


class DrawError(RuntimeError):
    """The environment has a drawer that cannot run here (e.g. no OpenGL for MuJoCo)."""


@dataclasses.dataclass(frozen=True)
class Drawer:
    """How to draw one environment (see the module doc); ``close`` frees renderer resources."""

    view: Callable[[Any, Any], Any]
    draw: Callable[[Any], np.ndarray]
    close: Callable[[], None] = lambda: None


def make_drawer(env_id: str, options: Optional[Dict] = None) -> Drawer:
    """The drawer of ``env_id`` built with the environment's constructor ``options``.

    Raises :class:`NoDrawerError` for an environment without one and :class:`DrawError` when
    MuJoCo cannot render here.
    """
    family, _, name = env_id.partition("/")
    options = dict(options or {})
    if family == "gymnax" and name in SCENES:
        return _classic_drawer(name, options)
    if family == "gymnax" and name.endswith("-MinAtar"):
        return Drawer(view=lambda inner, obs: obs, draw=minatar_frames)
    if family == "gymnax" and name == "Catch-bsuite":
        return Drawer(view=lambda inner, obs: obs, draw=_catch_frames)
    if family == "linear" and name:
        return Drawer(view=lambda inner, obs: obs, draw=_linear_frames)
    if family in ("brax", "dmc") and name:
        return _mujoco_drawer(env_id, family, name, options)
    raise NoDrawerError(f"no drawer for {env_id}; supported: {', '.join(SUPPORTED)}")


# ----------------------------------------------------------------------------- geometry


def cartpole_pole_tip(x: float, theta: float, pole_length: float = 1.0) -> Tuple[float, float]:
    """Tip of CartPole's pole hinged at ``(x, 0)``: ``(x + l sin theta, l cos theta)``.

    gymnax's ``theta`` is the angle from upright, positive when the pole leans towards +x
    (pushing the cart right makes ``theta`` fall); the pole is ``2 * params.length`` long.
    """
    return x + pole_length * math.sin(theta), pole_length * math.cos(theta)


def pendulum_tip(theta: float) -> Tuple[float, float]:
    """Tip of the unit pendulum hinged at the origin: ``theta = 0`` is upright, as in gymnax."""
    return -math.sin(theta), math.cos(theta)


def acrobot_joints(theta1: float, theta2: float, l1: float = 1.0,
                   l2: float = 1.0) -> np.ndarray:
    """``[3, 2]`` points (pivot, elbow, tip) of the acrobot; both angles 0 hang straight down."""
    elbow = (l1 * math.sin(theta1), -l1 * math.cos(theta1))
    tip = (elbow[0] + l2 * math.sin(theta1 + theta2), elbow[1] - l2 * math.cos(theta1 + theta2))
    return np.array([(0.0, 0.0), elbow, tip])


def mountain_height(position):
    """Height of gymnax's mountain-car track: ``0.45 sin(3 x) + 0.55``."""
    return 0.45 * np.sin(3.0 * np.asarray(position)) + 0.55


def world_to_pixel(point: Tuple[float, float], scene: str) -> Tuple[int, int]:
    """``(row, column)`` of the pixel showing world ``point`` in a frame of ``SCENES[scene]``."""
    width, height, (x0, x1), (y0, y1) = SCENES[scene]
    column = (point[0] - x0) / (x1 - x0) * width
    row = (y1 - point[1]) / (y1 - y0) * height
    return min(int(row), height - 1), min(int(column), width - 1)


# ----------------------------------------------------------------------------- classic control


def _classic_drawer(name: str, options: Dict) -> Drawer:
    """matplotlib drawers of gymnax's classic-control tasks (their lengths from ``options``)."""
    if name == "CartPole-v1":
        pole = 2.0 * float(options.get("length", 0.5))
        view = lambda inner, obs: {"x": inner.x, "theta": inner.theta}
        scene = lambda ax: _cartpole_scene(ax, pole)
    elif name == "Pendulum-v1":
        view = lambda inner, obs: {"theta": inner.theta, "last_u": inner.last_u}
        scene = _pendulum_scene
    elif name == "Acrobot-v1":
        lengths = (float(options.get("link_length_1", 1.0)),
                   float(options.get("link_length_2", 1.0)))
        view = lambda inner, obs: {"theta1": inner.joint_angle1, "theta2": inner.joint_angle2}
        scene = lambda ax: _acrobot_scene(ax, lengths)
    else:
        goal = float(options.get("goal_position", 0.5 if name == "MountainCar-v0" else 0.45))
        view = lambda inner, obs: {"position": inner.position}
        scene = lambda ax: _mountain_car_scene(ax, goal)
    return Drawer(view=view, draw=lambda views: _scene_frames(name, scene, views))


def _scene_frames(name: str, scene: Callable, views: Dict[str, np.ndarray]) -> np.ndarray:
    """Frames ``[T, H, W, 3]`` of a matplotlib scene: ``scene(ax)`` draws the fixed parts and
    returns ``update(view_t)``, which moves the artists to one step's view."""
    width, height, xlim, ylim = SCENES[name]
    fig, canvas, ax = _figure(width, height)
    ax.set_axis_off()
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    update = scene(ax)
    steps = len(next(iter(views.values())))
    frames = np.empty((steps, height, width, 3), np.uint8)
    for t in range(steps):
        update({k: float(v[t]) for k, v in views.items()})
        frames[t] = _pixels(canvas)
    return frames


def _figure(width: int, height: int, margins: bool = False):
    """A matplotlib figure of ``width x height`` pixels on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.12, 0.84, 0.82) if margins else (0.0, 0.0, 1.0, 1.0))
    return fig, canvas, ax


def _pixels(canvas) -> np.ndarray:
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3]


def _cartpole_scene(ax, pole_length: float):
    from matplotlib.patches import Rectangle

    cart_w, cart_h = 0.5, 0.3
    ax.axhline(-cart_h / 2, color="black", lw=1)
    for edge in (-2.4, 2.4):  # gymnax's x_threshold: the episode ends past it
        ax.axvline(edge, color="0.7", lw=1, ls="--")
    cart = ax.add_patch(Rectangle((0, 0), cart_w, cart_h, color="black"))
    (pole,) = ax.plot([], [], color="#ca9865", lw=8, solid_capstyle="butt")
    (axle,) = ax.plot([], [], "o", color="#8184cb", ms=7)

    def update(v):
        cart.set_xy((v["x"] - cart_w / 2, -cart_h / 2))
        tip = cartpole_pole_tip(v["x"], v["theta"], pole_length)
        pole.set_data([v["x"], tip[0]], [0.0, tip[1]])
        axle.set_data([v["x"]], [0.0])

    return update


def _pendulum_scene(ax):
    (rod,) = ax.plot([], [], color="#cc4c4c", lw=12, solid_capstyle="round")
    ax.plot([0], [0], "o", color="black", ms=6)
    torque = ax.text(-1.2, -1.2, "", fontsize=9)

    def update(v):
        tip = pendulum_tip(v["theta"])
        rod.set_data([0.0, tip[0]], [0.0, tip[1]])
        torque.set_text(f"torque {v['last_u']:+.2f}")

    return update


def _acrobot_scene(ax, lengths):
    ax.axhline(1.0, color="black", lw=1)  # the tip must rise above this line
    (links,) = ax.plot([], [], "-o", color="#0000cc", lw=6, ms=8, mfc="#cccc00")

    def update(v):
        points = acrobot_joints(v["theta1"], v["theta2"], *lengths)
        links.set_data(points[:, 0], points[:, 1])

    return update


def _mountain_car_scene(ax, goal: float):
    xs = np.linspace(-1.2, 0.6, 200)
    ax.plot(xs, mountain_height(xs), color="black", lw=2)
    top = float(mountain_height(goal)) + 0.1
    ax.plot([goal, goal], [top - 0.1, top], color="black")
    ax.plot([goal], [top - 0.02], ">", color="#cccc00", ms=10)
    (car,) = ax.plot([], [], "s", color="black", ms=12)

    def update(v):
        car.set_data([v["position"]], [mountain_height(v["position"]) + 0.03])

    return update


# ----------------------------------------------------------------------------- grids


def minatar_colours(num_channels: int) -> np.ndarray:
    """``[C + 1, 3]`` uint8: black background, then one cubehelix colour per channel."""
    from matplotlib import colormaps

    cmap = colormaps["cubehelix"]
    colours = [cmap(v)[:3] for v in np.linspace(0.2, 0.9, num_channels)]
    return (np.array([(0.0, 0.0, 0.0)] + colours) * 255).astype(np.uint8)


def minatar_frames(grids: np.ndarray) -> np.ndarray:
    """``[T, 10, 10, C]`` 0/1 MinAtar grids -> ``[T, 10 k, 10 k, 3]`` frames, ``k`` px a cell;
    where channels overlap the highest one shows."""
    grids = np.asarray(grids)
    channels = grids.shape[-1]
    index = np.max((grids > 0.5) * np.arange(1, channels + 1), axis=-1)
    return _upscale(minatar_colours(channels)[index])


def _catch_frames(boards: np.ndarray) -> np.ndarray:
    """``[T, rows, columns]`` 0/1 Catch boards (ball and paddle) -> white-on-black frames."""
    lit = (np.asarray(boards) > 0.5).astype(np.uint8) * 255
    return _upscale(np.repeat(lit[..., None], 3, axis=-1))


def _upscale(cells: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(cells, _GRID_CELL, axis=1), _GRID_CELL, axis=2)


# ----------------------------------------------------------------------------- linear systems


def _linear_frames(states: np.ndarray) -> np.ndarray:
    """``[T, n]`` states -> frames of the state components plotted up to each step."""
    states = np.asarray(states, np.float64)
    steps, dims = states.shape
    width, height = 480, 320
    fig, canvas, ax = _figure(width, height, margins=True)
    low, high = float(states.min()), float(states.max())
    pad = 0.1 * max(high - low, 1e-3)
    ax.set_xlim(0, max(steps - 1, 1))
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("step")
    ax.set_ylabel("state")
    ax.axhline(0.0, color="0.7", lw=1)
    lines = [ax.plot([], [], lw=2, label=f"s[{i}]")[0] for i in range(dims)]
    ax.legend(loc="upper right", fontsize=8)
    frames = np.empty((steps, height, width, 3), np.uint8)
    for t in range(steps):
        for i, line in enumerate(lines):
            line.set_data(np.arange(t + 1), states[: t + 1, i])
        frames[t] = _pixels(canvas)
    return frames


# ----------------------------------------------------------------------------- MuJoCo


def _mujoco_drawer(env_id: str, family: str, name: str, options: Dict) -> Drawer:
    """Renders ``qpos`` with ``mujoco.Renderer``: brax's ``pipeline_state.q`` (q is qpos in
    every brax pipeline), Playground's ``data.qpos``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # brax's maintenance notice, GLFW's init warning
            import mujoco

            model = _mujoco_model(family, name, options)
            renderer = mujoco.Renderer(model, *_MUJOCO_SIZE)
    except Exception as err:  # any failure here means MuJoCo cannot draw on this machine
        backend = os.environ.get("MUJOCO_GL") or "unset"
        reason = (str(err).splitlines() or [""])[0].split(",")[0][:120] or type(err).__name__
        raise DrawError(f"cannot draw {env_id}: MuJoCo could not render (MUJOCO_GL={backend}: "
                        f"{reason}); set MUJOCO_GL=egl or osmesa on a machine with OpenGL"
                        ) from err
    data = mujoco.MjData(model)
    camera = _camera(mujoco, model)
    model.vis.headlight.ambient = np.maximum(model.vis.headlight.ambient, 0.4)  # brax's are dim
    model.vis.headlight.diffuse = np.maximum(model.vis.headlight.diffuse, 0.8)

    def draw(qpos: np.ndarray) -> np.ndarray:
        frames = np.empty((len(qpos),) + _MUJOCO_SIZE + (3,), np.uint8)
        for t, q in enumerate(np.asarray(qpos)):
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera)
            frames[t] = renderer.render()
        return frames

    if family == "brax":
        view = lambda inner, obs: inner.pipeline_state.q
    else:
        view = lambda inner, obs: inner.data.qpos
    return Drawer(view=view, draw=draw, close=renderer.close)


def _mujoco_model(family: str, name: str, options: Dict):
    """The ``MjModel`` of ``brax/<name>`` or ``dmc/<name>`` built with ``options``."""
    options = {k: v for k, v in options.items() if k != "max_episode_steps"}
    if family == "brax":
        from envs import brax_env

        return brax_env.load(name, **options).sys.mj_model
    from mujoco_playground import dm_control_suite

    from envs import dmc

    return dm_control_suite.load(dmc.TASKS[name], config=dmc._config(name, options)).mj_model


def _camera(mujoco, model):
    """The model's first camera (dm_control's default view; brax's tracking camera) if it has
    one, else a free camera that tracks the first body."""
    if model.ncam > 0:
        return 0
    camera = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, camera)
    if model.nbody > 1:
        camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        camera.trackbodyid = 1
        camera.distance = 1.2 * float(model.stat.extent)
    return camera
