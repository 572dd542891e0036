"""`scripts/kcloud offers`: the merged live offers of every provider with credentials -- kcloud's
answer to `sky show-gpus` and `dstack offer`, ranked by the shared GPU-class ladder, then price.

    scripts/kcloud offers [--gpu H100] [--max-price 3] [--available-only] [--output json]
"""
from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

from kcloud import errors, ladder, providers


def rows(gpu: str = "", max_price: float | None = None, available_only: bool = False) -> tuple[list[dict], dict]:
    """(offers, {provider: why skipped})."""
    clients, skipped = providers.with_credentials()
    catalogs = {}
    with ThreadPoolExecutor(max(1, len(clients))) as pool:
        futures = {name: pool.submit(c.catalog) for name, c in clients.items()}
        for name, f in futures.items():
            try:
                catalogs[name] = f.result()
            except errors.ApiError as exc:
                skipped[name] = exc.line()
    out = []
    needle = gpu.lower().replace(" ", "")
    for name, cat in catalogs.items():
        billing = providers.data(name).get("billing", {})
        for t in cat.types.values():
            if t.gpu_count <= 0:
                continue
            if needle and needle not in (t.gpu + t.name).lower().replace(" ", ""):
                continue
            if max_price is not None and t.price_per_hour > max_price:
                continue
            available = set(cat.available_regions(t.name))
            for region in (sorted(available) + sorted(set(cat.regions) - available)):
                if available_only and region not in available:
                    continue
                if region not in available and not _sold_in(t, region, cat):
                    continue
                out.append({"provider": name, "instance_type": t.name, "region": region, "gpus": t.gpu_count,
                            "gpu": t.gpu, "vram_gb_per_gpu": t.gpu_memory_gb, "price_per_hour": t.price_per_hour,
                            "billing_increment_s": billing.get("increment_s"), "available": region in available,
                            "rank": ladder.classes_of(name, t.name)})
    out.sort(key=lambda r: (not r["available"], r["rank"] if r["rank"] is not None else 99, r["gpus"],
                            r["price_per_hour"], r["provider"], r["region"]))
    return out, skipped


def _sold_in(t, region: str, cat) -> bool:
    """Without capacity we still list a (type, region) the catalog sells; a catalog that does not
    say where a type is sold lists it only where it has capacity."""
    regions = getattr(t, "regions", None)
    return bool(regions) and region in regions


def _increment(seconds) -> str:
    if not seconds:
        return "-"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def cmd_offers(args) -> int:
    found, skipped = rows(args.gpu or "", args.max_price, args.available_only)
    if args.output == "json":
        json.dump({"offers": found, "skipped": skipped}, sys.stdout, indent=1)
        print()
        return 0
    for name, why in sorted(skipped.items()):
        print(f"{name}: skipped ({why})")
    if not found:
        print("No offers match.")
        return 0
    print(f"{'PROVIDER':11} {'TYPE':26} {'REGION':17} {'GPUS':>4} {'GPU':22} {'VRAM':>6} {'$/H':>7} "
          f"{'BILLED':>7}  AVAILABLE")
    for r in found:
        print(f"{r['provider']:11} {r['instance_type']:26} {r['region']:17} {r['gpus']:>4} {r['gpu'][:22]:22} "
              f"{str(r['vram_gb_per_gpu']) + ' GB':>6} {r['price_per_hour']:7.2f} {_increment(r['billing_increment_s']):>7}  "
              f"{'yes' if r['available'] else 'no'}")
    have = sum(1 for r in found if r["available"])
    print(f"{have} of {len(found)} offers have capacity now (ranked: GPU class, GPUs, price).")
    return 0


def _price(text: str) -> float:
    import argparse
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a price in USD per hour") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the price must be positive")
    return value


def register(sub) -> None:
    o = sub.add_parser("offers", help="merged live offers of every provider: GPUs, VRAM, $/h, billing, capacity")
    o.add_argument("--gpu", default="", help="GPU model to match, e.g. H100, A100, B200")
    o.add_argument("--max-price", type=_price, default=None, metavar="USD", help="at most this much per hour")
    o.add_argument("--available-only", action="store_true", help="only offers with capacity now")
    o.add_argument("--output", choices=["table", "json"], default="table")
    o.set_defaults(func=cmd_offers)
