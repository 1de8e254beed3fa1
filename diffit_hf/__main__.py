"""Command line: `python -m diffit_hf presets` prints the preset table (name, parameters, GMACs)."""

import argparse

from .models.presets import preset_table


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m diffit_hf")
    parser.add_argument("command", choices=["presets"], help="presets: print every preset's size and cost")
    parser.parse_args()
    print(f"{'preset':<16}{'input':>10}{'params':>16}{'GMACs':>10}")
    for row in preset_table():
        print(f"{row['name']:<16}{row['input']:>10}{row['params']:>16,}{row['gmacs']:>10.2f}")


if __name__ == "__main__":
    main()
