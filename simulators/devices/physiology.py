"""What the sensors read: vitals, glucose, blood pressure, GPS fixes, battery. Vectorised.

Every function takes numpy arrays (one element per device or per reading) and a numpy
generator, so a single simulated device and a fleet of ten thousand share one model. The
numbers follow common clinical ranges for older adults: resting heart rate 60-80 bpm,
a few beats lower asleep and 15-30 higher walking; SpO2 95-98 % awake, a point or two
lower asleep; a treated type 2 diabetic reads 5-8 mmol/L fasting and 7-11 after meals;
a treated hypertensive 125-155 / 75-95 mmHg, higher in the morning.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from simulators.devices.paths import LYING, OFF_WRIST, SLEEPING, WALKING

F64 = NDArray[np.float64]


def _whole(x: F64, lo: float, hi: float) -> F64:
    """Clipped and rounded to whole numbers, as the devices display them."""
    out: F64 = np.rint(np.clip(x, lo, hi)).astype(np.float64)
    return out


# Glucose meter contexts (indices into CONTEXTS) and modes.
CONTEXTS = ("fasting", "before_meal", "after_meal", "random")
FASTING, BEFORE_MEAL, AFTER_MEAL, RANDOM = range(4)
NORMAL, HYPO, HYPER = range(3)


def heart_rate(activity: NDArray[np.int8], rest_bpm: F64, rng: np.random.Generator) -> F64:
    """Heart rate in bpm (whole numbers, as bands report), by activity; NaN off the wrist."""
    bpm = rest_bpm.astype(np.float64).copy()
    bpm[activity == SLEEPING] -= 8.0
    walking = activity == WALKING
    bpm[walking] += rng.uniform(15.0, 28.0, int(walking.sum()))
    bpm[activity == LYING] += 12.0  # after a fall: pain and fright
    bpm += rng.normal(0.0, 2.5, bpm.shape)
    out = _whole(bpm, 35.0, 190.0)
    out[activity == OFF_WRIST] = np.nan
    return out


def spo2(activity: NDArray[np.int8], base_pct: F64, rng: np.random.Generator) -> F64:
    """Oxygen saturation in %, whole numbers; NaN off the wrist."""
    pct = base_pct.astype(np.float64).copy()
    pct[activity == SLEEPING] -= 1.5
    pct[activity == WALKING] -= 0.5
    pct += rng.normal(0.0, 0.7, pct.shape)
    out = _whole(pct, 70.0, 100.0)
    out[activity == OFF_WRIST] = np.nan
    return out


def step_count(walking_s: F64, cadence_spm: F64, indoor_steps_per_h: F64, hours_awake: F64) -> NDArray[np.int64]:
    """Steps since midnight: cadence while walking plus pottering about at home."""
    steps = walking_s * cadence_spm / 60.0 + hours_awake * indoor_steps_per_h
    return np.floor(steps).astype(np.int64)


def glucose_mmol(context: NDArray[np.int8], mode: NDArray[np.int8], control: F64, rng: np.random.Generator) -> F64:
    """A meter reading in mmol/L (one decimal) for the meal context and the elder's state.

    ``control`` is the elder's usual fasting level (about 5 well controlled, 8 poorly).
    Hypoglycaemia reads 2.2-3.6 mmol/L; a hyperglycaemic episode 16-25.
    """
    offset = np.select(
        [context == FASTING, context == BEFORE_MEAL, context == AFTER_MEAL], [0.0, 0.4, 3.0], default=1.2
    )
    value = control + offset + rng.normal(0.0, 0.6, control.shape)
    value = np.where(mode == HYPO, rng.uniform(2.2, 3.6, control.shape), value)
    value = np.where(mode == HYPER, rng.uniform(16.0, 25.0, control.shape), value)
    out: F64 = np.round(np.clip(value, 1.8, 33.0), 1)
    return out


def blood_pressure(
    hour: F64,
    crisis: NDArray[np.bool_],
    base_systolic: F64,
    base_diastolic: F64,
    rest_bpm: F64,
    rng: np.random.Generator,
) -> tuple[F64, F64, F64, NDArray[np.bool_]]:
    """(systolic, diastolic, pulse, irregular) in mmHg and bpm, whole numbers.

    Morning readings run 5-10 mmHg above evening ones (the morning surge). A hypertensive
    crisis reads 180-215 / 120-135. About one reading in thirty flags an irregular beat.
    """
    morning = (hour >= 4.0) & (hour < 11.0)
    surge = np.where(morning, rng.uniform(4.0, 10.0, hour.shape), 0.0)
    sys_ = base_systolic + surge + rng.normal(0.0, 6.0, hour.shape)
    dia = base_diastolic + surge * 0.4 + rng.normal(0.0, 4.0, hour.shape)
    sys_ = np.where(crisis, rng.uniform(180.0, 215.0, hour.shape), sys_)
    dia = np.where(crisis, rng.uniform(120.0, 135.0, hour.shape), dia)
    dia = np.minimum(dia, sys_ - 20.0)
    pulse = rest_bpm + np.where(crisis, 15.0, 0.0) + rng.normal(0.0, 3.0, hour.shape)
    irregular = rng.random(hour.shape) < 1 / 30
    return _whole(sys_, 70.0, 260.0), _whole(dia, 40.0, 160.0), _whole(pulse, 40.0, 160.0), irregular


def gps_fix(indoor: NDArray[np.bool_], rng: np.random.Generator) -> tuple[F64, F64, F64]:
    """(east error m, north error m, reported accuracy m); accuracy NaN when there is no fix.

    Outdoors the band reports 4-12 m (15-40 m in a street canyon now and then) and the
    error is roughly that; indoors it has no fix most of the time, otherwise a coarse
    Wi-Fi or cell position good to 25-80 m.
    """
    n = int(indoor.shape[0])
    acc: F64 = rng.uniform(4.0, 12.0, size=n)
    canyon = rng.random(n) < 0.05
    acc[canyon] = rng.uniform(15.0, 40.0, int(canyon.sum()))
    coarse = rng.uniform(25.0, 80.0, n)
    acc = np.where(indoor, np.where(rng.random(n) < 0.35, coarse, np.nan), acc).astype(np.float64)
    sigma = np.nan_to_num(acc) / 2.0
    return rng.normal(0.0, 1.0, n) * sigma, rng.normal(0.0, 1.0, n) * sigma, np.round(acc, 1)


def battery_step(level: F64, dt_s: F64, charging: NDArray[np.bool_], drain_pct_per_h: F64) -> F64:
    """Battery after ``dt_s``: drains while worn (faster with GPS), charges ~45 %/h on the dock."""
    out: F64 = np.clip(level + np.where(charging, 45.0, -drain_pct_per_h) * dt_s / 3600.0, 0.0, 100.0)
    return out
