#!/usr/bin/env python3
"""Render one benchmark section's measurements as a text table, markdown and JSON.

Usage: report.py SECTION IN.tsv OUT_PREFIX

IN.tsv (tab-separated, written by bench.sh):
  #meta <TAB> key <TAB> value          facts about the run (versions, machine, workload)
  #note <TAB> text                     a line printed under the table
  metric <TAB> unit <TAB> target <TAB> SUBJECT <TAB> BASELINE [<TAB> OTHER...]   header, once
  label  <TAB> unit <TAB> target <TAB> value   <TAB> value    [<TAB> value...]    one per metric

The ratio column is SUBJECT/BASELINE. target is "" (informational) or "<=X": the row
PASSes when the ratio is at most X. Empty values are "n/a". Units "bytes" and "KiB"
are shown in MiB. Writes OUT_PREFIX.md and OUT_PREFIX.json; prints the text table.
Exit status: 0, or 4 if any target row is MISS or n/a (bench.sh decides what to do with it).
"""
import json
import sys


def num(v):
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return v  # text cell, e.g. "identical"


def shown(v, unit):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if unit == "bytes":
        return f"{v / 1048576:.1f}"
    if unit == "KiB":
        return f"{v / 1024:.1f}"
    if unit == "s":
        return f"{v:.2f}"
    return f"{v:g}"


def shown_unit(unit):
    return "MiB" if unit in ("bytes", "KiB") else unit


def main():
    section, src, prefix = sys.argv[1:4]
    meta, notes, header, rows = {}, [], None, []
    with open(src) as f:
        for line in f:
            cells = line.rstrip("\n").split("\t")
            if cells[0] == "#meta":
                meta[cells[1]] = cells[2] if len(cells) > 2 else ""
            elif cells[0] == "#note":
                notes.append(cells[1] if len(cells) > 1 else "")
            elif header is None:
                header = cells
            else:
                rows.append(cells + [""] * (len(header) - len(cells)))
    if header is None:
        sys.exit(f"report: {src} has no header line")
    tools = header[3:]
    subject, baseline = tools[0], tools[1]

    out, missed = [], False
    for r in rows:
        label, unit, target = r[0], r[1], r[2]
        vals = {t: num(v) for t, v in zip(tools, r[3:])}
        a, b = vals[subject], vals[baseline]
        ratio = a / b if isinstance(a, float) and isinstance(b, float) and b != 0 else None
        result = ""
        if target:
            limit = float(target.lstrip("<="))
            result = "n/a" if ratio is None else ("PASS" if ratio <= limit else "MISS")
            missed = missed or result != "PASS"
        out.append({"metric": label, "unit": shown_unit(unit), "raw_unit": unit,
                    "values": vals, "ratio": ratio, "target": target, "result": result})

    cols = ["metric", "unit"] + tools + [f"{subject}/{baseline}", "target", "result"]
    table = []
    for o in out:
        table.append([o["metric"], o["unit"]] + [shown(o["values"][t], o["raw_unit"]) for t in tools]
                     + ["" if o["ratio"] is None else f"{o['ratio']:.3f}",
                        o["target"].replace("<=", "≤") + ("x" if o["target"] else ""), o["result"]])

    widths = [max(len(c), *(len(row[i]) for row in table)) if table else len(c) for i, c in enumerate(cols)]
    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(cols))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print(line(row))
    for n in notes:
        print(n)

    with open(prefix + ".md", "w") as f:
        f.write(f"# keepfs benchmark: {section}\n\n")
        for k, v in meta.items():
            f.write(f"- {k}: {v}\n")
        f.write("\n| " + " | ".join(cols) + " |\n")
        f.write("|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|\n")
        for row in table:
            f.write("| " + " | ".join(c or " " for c in row) + " |\n")
        if notes:
            f.write("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    with open(prefix + ".json", "w") as f:
        json.dump({"section": section, "meta": meta, "subject": subject, "baseline": baseline,
                   "rows": [{k: v for k, v in o.items() if k != "raw_unit"} | {"unit": o["raw_unit"]} for o in out],
                   "notes": notes}, f, indent=2)
        f.write("\n")
    sys.exit(4 if missed else 0)


if __name__ == "__main__":
    main()
