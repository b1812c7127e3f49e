"""The benchmark's PNG figures (matplotlib, the ``eval`` extra): time per query against N, and time per pair
against image tokens, both on log scales, every method against the dense baselines."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the bench plots need matplotlib: pip install 'minirerank-integrations[eval]'") from exc
    return plt


def plot_all(result: dict, out: Path) -> list[Path]:
    """Write ``time_vs_n.png`` and ``time_vs_image_tokens.png`` under ``out``; return their paths."""
    plt = _pyplot()
    rows = [r for r in result["rows"] if r["workload"] == "text->image" and r["seconds_per_query"] is not None]
    shape = result["shape"]["name"]
    written = []

    def label_of(method: str, state: str) -> str:
        return method if state == "n/a" else f"{method} ({state})"

    # one colour per line label in every panel and figure, so a method reads the same everywhere
    labels = sorted({label_of(r["method"], r["state"]) for r in rows if r["state"] != "ingest"})
    colors = {label: plt.get_cmap("tab20")(i % 20) for i, label in enumerate(labels)}

    sizes = sorted({r["image_size"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for method, state in sorted({(r["method"], r["state"]) for r in rows if r["image_size"] == size}):
            points = sorted(
                (r["n"], r["seconds_per_query"])
                for r in rows
                if r["image_size"] == size and (r["method"], r["state"]) == (method, state) and r["state"] != "ingest"
            )
            if not points or state == "ingest":
                continue
            if state == "n/a":  # a dense baseline costs its time per pair at every N: drawn as a line
                per_pair = next(r["seconds_per_pair"] for r in rows if (r["image_size"], r["method"]) == (size, method))
                ns = sorted({r["n"] for r in rows if r["image_size"] == size and r["state"] == "warm"} | {points[0][0]})
                points = [(n, per_pair * n) for n in ns]
            label = label_of(method, state)
            style = "-" if state in ("warm", "n/a") else "--"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=label, color=colors[label])
        ax.set(xscale="log", yscale="log", xlabel="documents per query (N)", ylabel="seconds per query")
        ax.set_title(f"{shape}, text query over {size}x{size} pages")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "time_vs_n.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    largest = max((r["n"] for r in rows if r["state"] == "warm"), default=None)
    for method, state in sorted({(r["method"], r["state"]) for r in rows}):
        points = sorted(
            (r["image_tokens"], r["seconds_per_pair"])
            for r in rows
            if (r["method"], r["state"]) == (method, state)
            and (state in ("n/a", "ingest") or r["n"] == largest)
            and r["image_tokens"]
        )
        points = sorted(dict(points).items())
        if points:
            label = label_of(method, state)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label, color=colors.get(label))
    ax.set(xscale="log", yscale="log", xlabel="visual tokens per page", ylabel="seconds per pair (ingest: per doc)")
    ax.set_title(f"{shape}: cost against image size (warm/cold at N={largest})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "time_vs_image_tokens.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
