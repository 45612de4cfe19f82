"""The results plot: latency CDFs (bridge vs baseline) for the three ping-pong paths, and the hub's
fan-out latency against the number of receivers. matplotlib is optional (extra ``bench``)."""

from __future__ import annotations

from pathlib import Path

from bench.common import Results


def plot(results: Results, path: Path) -> bool:
    """Write the PNG; returns False (and says why) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("matplotlib not installed (pip install -e '.[bench]'): no plot")
        return False
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    sections = ["command latency", "telemetry latency", "mqtt latency"]
    results.samples.setdefault("command latency/hub only", results.samples.get("hub-only latency/bridge", []))
    for ax, section in zip(axes.flat, sections, strict=False):
        for side, style, label in (("bridge", "-", "signal-bridge"), ("baseline", "--", "baseline"),
                                   ("hub only", ":", "hub only (SessionClient -> hub -> SessionClient)")):
            xs = sorted(results.samples.get(f"{section}/{side}", []))
            if xs:
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, style, label=f"{label} (n={len(xs)})")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.FixedLocator([0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 50, 100]))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of samples")
        ax.set_title(section)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    ax = axes.flat[3]
    for key, style in (("fanout p50/hub", "o-"), ("fanout last/hub", "s-"),
                       ("fanout p50/relay", "o--"), ("fanout last/relay", "s--")):
        pts = results.series.get(key, [])
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=key.replace("/", ", "))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("receivers in one session")
    ax.set_ylabel("fan-out latency (ms)")
    ax.set_title("hub fan-out (median round)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.suptitle("signal-bridge vs minimal baseline, 127.0.0.1, same run")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
