"""Send a fraud model's predictions to Kafka, and their ground truth some seconds later.

The simulated model scores card transactions. Halfway through the run the traffic drifts:
amounts grow, electronics and gaming merchants take over, and fraudsters adapt, so the
model's scores are worth less. driftline sees the inputs drift at once, and the realized
performance fall once the delayed labels come in.

    python examples/fraud/produce.py --seconds 90 --rate 50

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

MODEL = "fraud"
MERCHANTS = np.array(["grocery", "travel", "electronics", "gaming", "fashion"], dtype=object)
CHANNELS = np.array(["web", "app", "pos"], dtype=object)
FEATURES = ("amount", "account_age_days", "merchant_category", "channel")


def simulate(rng: np.random.Generator, n: int, drifted: bool = False) -> dict[str, Any]:
    """``n`` transactions: the four features, the model's score and the true label (0/1).

    Before the drift the model is calibrated: the label is drawn from its score.
    """
    merchant_p = [0.15, 0.1, 0.35, 0.3, 0.1] if drifted else [0.4, 0.15, 0.15, 0.1, 0.2]
    merchant = rng.choice(MERCHANTS, n, p=merchant_p)
    channel = rng.choice(CHANNELS, n, p=[0.4, 0.35, 0.25])
    amount = rng.lognormal(4.3 if drifted else 3.5, 0.9, n).round(2)
    account_age_days = rng.gamma(2.0, 200.0, n).round().astype(int)
    risky = np.isin(merchant, ["electronics", "gaming"])
    logit = (
        -2.5
        + 0.8 * (np.log(amount) - 3.5)
        - 0.004 * account_age_days
        + 1.2 * risky
        + 0.6 * (channel == "web")
    )
    score = 1.0 / (1.0 + np.exp(-logit))
    # after the drift fraudsters adapt: fraud is likelier than the score says, and no
    # longer follows the amount
    true_logit = logit + (1.2 - 0.8 * (np.log(amount) - 3.5) if drifted else 0.0)
    truth = (rng.random(n) < 1.0 / (1.0 + np.exp(-true_logit))).astype(int)
    return {
        "amount": amount,
        "account_age_days": account_age_days,
        "merchant_category": merchant,
        "channel": channel,
        "prediction": score.round(4),
        "label": truth,
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
    p.add_argument("--predictions-topic", default="examples.fraud.predictions")
    p.add_argument("--ground-truth-topic", default="examples.fraud.ground-truth")
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
    pending: list[tuple[float, str, int]] = []  # (when the label is known, event id, label)
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
