"""The attack benchmark's ImageNet row: our DeepFool vs Foolbox and torchattacks on EfficientNet-Lite0.

Same model (``pretrained("imagenet-efficientnet-lite0")``), same images (those of the first N rows
of ``../shared/data/imagenet-val-1300/labels.csv`` that the model classifies correctly, at
224x224), one run:

* DeepFool-L2, 50 steps, overshoot 0.02, the 10 most likely other classes as candidates:
  ours (batched) vs Foolbox ``L2DeepFoolAttack(candidates=11)`` (Foolbox counts the label among
  its candidates) vs torchattacks ``DeepFool`` given the model's 11 clean top logits (torchattacks
  has no candidate limit: on all 1,000 classes a step costs 1,000 backward passes, minutes per
  image on one CPU thread; restricted to the same classes it runs the same algorithm);
* ours DeepFool-top-5 (the label must leave the clean top 5), same settings;
* FGSM (eps 2/255) and BIM-L-inf (eps 2/255, 10 steps of 0.25/255) vs torchattacks: largest difference.

Run single-threaded beside other work::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_attacks_imagenet.py --n 32 \\
        --out benchmarks/results/attacks_imagenet.json

Success rate and median L2 are over those correctly classified images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import nn

from _attack_bench import REPO, attack_summary, batched, environment, timed  # noqa: E402


class TopLogits(nn.Module):
    """The model's logits of fixed classes (1, M) for one image: DeepFool restricted to them."""

    def __init__(self, model: nn.Module, classes: torch.Tensor) -> None:
        super().__init__()
        self.model, self.classes = model, classes
        self.eval()  # torchattacks restores the mode it found; training mode would leak to the model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).gather(1, self.classes)






def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("SAFETYNET_DATA", str(REPO.parent / "shared" / "data"))
                   + "/imagenet-val-1300")
    p.add_argument("--n", type=int, default=32, help="the first N images of labels.csv")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "attacks_imagenet.json"))
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import foolbox as fb
    import torchattacks

    from safetynet._io import write_json_atomic
    from safetynet.attacks import BIM, FGSM, DeepFool, TopKMisclassification
    from safetynet.data.imagenet import load_imagenet_folder
    from safetynet.models import pretrained

    model = pretrained("imagenet-efficientnet-lite0")
    for q in model.parameters():
        q.requires_grad_(False)
    data = load_imagenet_folder(args.data_dir, "all", limit=args.n)
    x, y, bs = data.images, data.labels, args.batch_size
    with torch.no_grad():
        clean = torch.cat([model(x[i:i + bs]) for i in range(0, len(x), bs)])
    correct = clean.argmax(1) == y
    # Only images the model gets right: an already misclassified image counts as "fooled" for
    # Foolbox and ours but not for torchattacks' restricted model (whose target is the clean top-1).
    x, y, clean = x[correct], y[correct], clean[correct]
    results: dict = {"model": "pretrained:imagenet-efficientnet-lite0",
                     "images": f"the {len(x)} correctly classified of the first {args.n} of {args.data_dir}",
                     "n": args.n, "n_correct": len(x), "batch_size": bs, "threads": args.threads,
                     "clean_top1_first_n": float(correct.double().mean())}
    run = lambda fn: batched(fn, x, y, bs)  # noqa: E731

    ours = DeepFool(steps=50, overshoot=0.02, candidates=10)
    DeepFool(steps=1, candidates=2)(model, x[:2], y[:2])  # warm-up outside the timings
    adv_ours, dt = timed(lambda: run(lambda a, b: ours(model, a, b).clipped))
    df = {"ours": attack_summary(model, x, y, adv_ours, dt, bs)}
    print("deepfool ours", df["ours"], flush=True)
    fatk = fb.attacks.L2DeepFoolAttack(steps=50, overshoot=0.02, candidates=11)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    adv_fb, dt = timed(lambda: run(lambda a, b: fatk(fmodel, a, b, epsilons=None)[1]))
    df["foolbox"] = attack_summary(model, x, y, adv_fb, dt, bs)
    print("deepfool foolbox", df["foolbox"], flush=True)
    # torchattacks' target is index 0 of the restricted logits: the clean top-1, the label here.
    top = clean.topk(11, dim=1).indices
    zero = torch.zeros(1, dtype=torch.long)
    adv_ta, dt = timed(lambda: torch.cat([
        torchattacks.DeepFool(TopLogits(model, top[i:i + 1]), steps=50, overshoot=0.02)(x[i:i + 1], zero)
        for i in range(len(x))]))
    df["torchattacks_top11_logits"] = attack_summary(model, x, y, adv_ta, dt, bs)
    print("deepfool torchattacks", df["torchattacks_top11_logits"], flush=True)
    with torch.no_grad():
        fooled = {k: model(a).argmax(1) != y for k, a in (("ours", adv_ours), ("foolbox", adv_fb), ("torchattacks", adv_ta))}
    common = fooled["ours"] & fooled["foolbox"] & fooled["torchattacks"] & (clean.argmax(1) == y)
    df["median_l2_common"] = {"images": int(common.sum()), **{
        k: round(float((a - x).flatten(1).norm(dim=1)[common].median()), 4)
        for k, a in (("ours", adv_ours), ("foolbox", adv_fb), ("torchattacks", adv_ta))}}
    top5 = DeepFool(steps=50, overshoot=0.02, candidates=10)
    adv5, dt = timed(lambda: run(lambda a, b: top5(model, a, TopKMisclassification(b, k=5)).clipped))
    with torch.no_grad():
        pred5 = torch.cat([model(adv5[i:i + bs]).argmax(1) for i in range(0, len(x), bs)])
    left = ~((clean.topk(5, dim=1).indices == pred5[:, None]).any(1) | (pred5 == y))
    df["ours_top5"] = {**attack_summary(model, x, y, adv5, dt, bs), "left_top5_rate": round(float(left.double().mean()), 4),
                       "median_l2_left_top5": round(float((adv5 - x).flatten(1).norm(dim=1)[left].median()), 4)}
    print("deepfool ours top-5", df["ours_top5"], flush=True)
    df["speedup_vs_foolbox"] = round(df["ours"]["images_per_second"] / df["foolbox"]["images_per_second"], 2)
    df["speedup_vs_torchattacks_top11"] = round(
        df["ours"]["images_per_second"] / df["torchattacks_top11_logits"]["images_per_second"], 2)
    results["deepfool_l2"] = df

    eps = 2 / 255
    for name, ours_fn, ref in (("fgsm", lambda a, b: FGSM()(model, a, b, eps=eps).clipped, torchattacks.FGSM(model, eps=eps)),
                               ("bim10", lambda a, b: BIM(steps=10, step_size=0.25 / 255)(model, a, b, eps=eps).clipped,
                                torchattacks.BIM(model, eps=eps, alpha=0.25 / 255, steps=10))):
        adv_o, dt_o = timed(lambda fn=ours_fn: run(fn))
        adv_r, dt_r = timed(lambda fn=ref: run(fn))
        results[name] = {"ours": attack_summary(model, x, y, adv_o, dt_o, bs), "torchattacks": attack_summary(model, x, y, adv_r, dt_r, bs),
                         "max_abs_diff": float((adv_o - adv_r).abs().max())}
        print(name, results[name], flush=True)

    results["environment"] = environment(torchattacks=torchattacks.__version__, foolbox=fb.__version__)
    write_json_atomic(args.out, results)
    print(json.dumps({"out": args.out, "speedup_vs_foolbox": df["speedup_vs_foolbox"],
                      "speedup_vs_torchattacks_top11": df["speedup_vs_torchattacks_top11"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
