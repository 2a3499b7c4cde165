"""A fine-tuning epoch end to end over a bare training step of the same model.

- End to end: `graft.train(strategy="finetune")` on the first TRAIN_PER_CLASS images of each class
  of DATA/train (VAL_PER_CLASS of DATA/test as val): the image phase's epochs as graft times them
  (`epoch_time_s` in metrics.json: loading, decoding, augmenting, forward, backward and the
  optimiser step, and the epoch's validation pass), the median epoch, in images/s of training data.
  `images_s` (the whole image phase, the trainer's start-up included) is recorded too.
- Bare: the trained run's model, every parameter training, AdamW, forward/backward/step on a
  channels_last batch of 32 already in memory, in the precision graft trains in here (bf16
  autocast where the CPU computes bf16 natively, as Lightning's bf16-mixed), BARE_BATCHES steps.
Ratio: the median round of end to end / bare.
"""

from __future__ import annotations

import statistics

from ._runs import Context, Parameter, class_subset, image_files, interleaved, timed

PARAMETERS = {
    "train_per_class": Parameter(64, 4, "training images per class (DATA/train)"),
    "val_per_class": Parameter(4, 2, "validation images per class (DATA/test)"),
    "epochs": Parameter(2, 1, "image epochs per run (the median epoch is taken)"),
    "bare_batches": Parameter(20, 2, "training steps of the bare measurement, batches of 32"),
    "img_size": Parameter(0, 64, "input size in px; 0: the backbone's own (224)"),
    "rounds": Parameter(2, 1, "interleaved rounds"),
}


def bare_rate(run_dir, *, batches: int) -> float:
    import torch
    from torch.nn import functional as F

    import graft
    from graft.runtime import resolve_precision

    classifier = graft.load(run_dir)
    model = classifier.model.train().to(memory_format=torch.channels_last)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(32, *classifier.data_config.input_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(classifier.classes), (32,))
    bf16 = resolve_precision("auto") == "bf16"

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    _, seconds = timed(lambda: [step() for _ in range(batches)])
    return 32 * batches / seconds


def run(context: Context, *, train_per_class: int, val_per_class: int, epochs: int, bare_batches: int, img_size: int,
        rounds: int) -> dict:
    import graft

    data = class_subset(context.data, context.work / "data", train_per_class=train_per_class,
                        val_per_class=val_per_class)
    train_images = len(image_files(data / "train"))
    runs = iter(range(rounds))
    trained: list = []

    def graft_epoch() -> tuple[float, dict]:
        result = graft.train(data, strategy="finetune", epochs=epochs, head_epochs=1, views=1, patience=epochs,
                             out=context.work / "runs", name=f"round-{next(runs)}", cache_dir=context.work / "cache",
                             img_size=img_size or None, progress=False, log=None, report=False, audit=False)
        trained.append(result.run_dir)
        seconds = [row.epoch_time_s for row in result.metrics.history if row.phase == "images" and row.epoch_time_s]
        if not seconds:
            raise RuntimeError("the run recorded no image epoch")
        return train_images / statistics.median(seconds), {"epoch_s": seconds,
                                                           "images_s": result.metrics.timings.get("images_s")}

    first = graft_epoch()  # untimed: extracts the head phase's features, gives the model for the bare step
    runs = iter(range(1, rounds + 1))
    pair = interleaved(rounds, {"epoch": (lambda: bare_rate(trained[0], batches=bare_batches), graft_epoch)},
                       log=context.log)["epoch"]
    return {"summary": f"fine-tune epoch {pair.ratio:.2f} x a bare step ({pair.measured[0]:.1f} / {pair.baseline[0]:.1f} "
                       f"img/s in round 1)",
            "train_images": train_images, "img_per_s": pair.summary(1), "ratio": round(pair.ratio, 3),
            "warm_up_img_per_s": round(first[0], 1),
            "epoch_s": [extra["epoch_s"] for extra in pair.extras], "images_s": [extra["images_s"] for extra in pair.extras]}
