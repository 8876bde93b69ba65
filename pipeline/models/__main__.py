"""``python -m pipeline.models [--table | --trained]``: list the zoo, or print its README tables."""

import argparse

from pipeline.models.catalogue import trainable_table
from pipeline.models.zoo import list_models, variant_table

parser = argparse.ArgumentParser(prog="python -m pipeline.models", description=__doc__)
parser.add_argument("--table", action="store_true",
                    help="markdown table of params, receptive field and FLOPs of every variant")
parser.add_argument("--trained", action="store_true",
                    help="markdown table of the trainable models: each models/<name> asset, its architecture and input")
parser.add_argument("--in-channels", type=int, default=15)
parser.add_argument("--input-length", type=int, default=256)
args = parser.parse_args()
if args.table:
    print(variant_table(args.in_channels, args.input_length))
elif args.trained:
    print(trainable_table())
else:
    for name, variants in list_models().items():
        print(f"{name}: {', '.join(variants)}")
