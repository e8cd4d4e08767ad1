"""Send a delivery-time model's predictions to Kafka, and the real times some seconds later.

The simulated model predicts how many minutes a food delivery takes. Halfway through the
run the traffic drifts: the service opens in a wider area (longer distances) and the rainy
season starts; in the rain couriers are slower than the model thinks. driftline sees the
inputs and the predictions drift at once, and the error grow once the real times come in.

    python examples/regression/produce.py --seconds 90 --rate 50

The last line printed is ``sent N predictions, M labels``. The exit code is 1 when Kafka
did not acknowledge every event.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from typing import Any

import numpy as np

from consumers.producer import PredictionLogger

MODEL = "delivery_eta"
WEATHER = np.array(["clear", "cloudy", "rain", "snow"], dtype=object)
FEATURES = ("distance_km", "items", "hour", "weather")


def simulate(rng: np.random.Generator, n: int, drifted: bool = False) -> dict[str, Any]:
    """``n`` deliveries: the four features, the predicted and the real minutes."""
    weather_p = [0.15, 0.25, 0.5, 0.1] if drifted else [0.55, 0.3, 0.12, 0.03]
    weather = rng.choice(WEATHER, n, p=weather_p)
    distance_km = rng.gamma(2.0, 2.5 if drifted else 1.5, n).round(2)
    items = rng.poisson(2.0, n) + 1
    hour = rng.choice(np.arange(10, 23), n)
    bad = np.isin(weather, ["rain", "snow"])
    rush = np.isin(hour, [12, 13, 19, 20])
    predicted = 12.0 + 3.0 * distance_km + 1.0 * items + 5.0 * rush + 4.0 * bad
    # the model is right on average before the drift; in the rainy season bad weather
    # costs three times what it learnt
    slow = 8.0 * bad if drifted else 0.0
    actual = predicted + slow + rng.normal(0.0, 3.0, n)
    return {
        "distance_km": distance_km,
        "items": items,
        "hour": hour,
        "weather": weather,
        "prediction": predicted.round(2),
        "label": np.maximum(actual, 1.0).round(2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
        help="default: $DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS, else localhost:9092",
    )
    p.add_argument("--seconds", type=float, default=90.0, help="how long to send (default 90)")
    p.add_argument("--rate", type=float, default=50.0, help="predictions per second")
    p.add_argument("--label-delay", type=float, default=5.0, help="seconds until a label")
    p.add_argument("--predictions-topic", default="examples.regression.predictions")
    p.add_argument("--ground-truth-topic", default="examples.regression.ground-truth")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    logger = PredictionLogger(
        args.bootstrap_servers,
        predictions_topic=args.predictions_topic,
        ground_truth_topic=args.ground_truth_topic,
    )
    tick = 0.1
    total = int(args.rate * args.seconds)
    start = time.time()
    pending: list[tuple[float, str, float]] = []  # (when the label is known, event id, label)
    predictions = labels = 0
    drifting = False
    print(f"sending {total} predictions in {args.seconds:g}s; the drift starts at half-time")
    while predictions < total or pending:
        now = time.time()
        elapsed = now - start
        if elapsed >= args.seconds / 2 and not drifting:
            drifting = True
            print(f"t={elapsed:.0f}s: the traffic drifts now")
        n = min(total, int(args.rate * elapsed)) - predictions
        if n > 0:
            rows = {k: v.tolist() for k, v in simulate(rng, n, drifted=drifting).items()}
            for i in range(n):
                features = {f: rows[f][i] for f in FEATURES}
                event_id = logger.log_prediction(
                    MODEL, features, rows["prediction"][i], timestamp=now
                )
                heapq.heappush(pending, (now + args.label_delay, event_id, rows["label"][i]))
            predictions += n
        while pending and pending[0][0] <= now:
            _, event_id, label = heapq.heappop(pending)
            logger.log_ground_truth(event_id, MODEL, label, timestamp=now)
            labels += 1
        time.sleep(max(0.0, now + tick - time.time()))
    delivered = logger.flush(timeout=30.0)
    logger.close()
    if not delivered or logger.failed or logger.dropped:
        print(f"Kafka did not take every event: {logger!r}", file=sys.stderr)
        return 1
    print(f"sent {predictions} predictions, {labels} labels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
