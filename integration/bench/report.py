#!/usr/bin/env python3
"""Render one benchmark section's measurements as text tables, markdown and JSON.

Usage: report.py SECTION IN.tsv OUT_PREFIX

IN.tsv (tab-separated, written by bench.sh):
  #meta  <TAB> key <TAB> value         facts about the run (versions, machine, workload)
  #note  <TAB> text                    a line printed under the table it follows
  #table <TAB> title                   starts a new table (optional before the first one)
  #ratio <TAB> A <TAB> B               an extra ratio column A/B in the table (A and B are columns
                                       of its header), shown right after A/BASELINE; informational
  metric <TAB> unit <TAB> target <TAB> SUBJECT <TAB> BASELINE [<TAB> OTHER...]   header, once per table
  label  <TAB> unit <TAB> target <TAB> value   <TAB> value    [<TAB> value...]    one per metric

Ratio columns: SUBJECT/BASELINE, then OTHER/BASELINE for every other column.
target is "" (informational) or one of
  "<=X"     the row PASSes when SUBJECT/BASELINE is at most X   (lower is better)
  ">=X"     ... at least X                                     (higher is better, e.g. MB/s)
  "abs<X"   the row PASSes when SUBJECT's own value, in the unit shown, is below X
  "abs<=X"  ... at most X
Empty values are "n/a". Units "bytes" and "KiB" are shown in MiB. Writes OUT_PREFIX.md and
OUT_PREFIX.json; prints the text tables.
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


def scaled(v, unit):
    if unit == "bytes":
        return v / 1048576
    if unit == "KiB":
        return v / 1024
    return v


def shown(v, unit):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if unit in ("bytes", "KiB"):
        return f"{scaled(v, unit):.1f}"
    if unit == "s":
        return f"{v:.2f}"
    if unit in ("MB/s", "IOPS"):
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v:g}"


def shown_unit(unit):
    return "MiB" if unit in ("bytes", "KiB") else unit


def ratio(a, b):
    return a / b if isinstance(a, float) and isinstance(b, float) and b != 0 else None


def judge(target, unit, subject_value, r):
    """(result, target as shown) for one row."""
    if not target:
        return "", ""
    if target.startswith("abs"):
        t = target[3:]
        op = "<=" if t.startswith("<=") else "<"
        limit = float(t[len(op):])
        v = subject_value if isinstance(subject_value, float) else None
        shown_t = ("≤" if op == "<=" else "<") + f"{limit:g} {shown_unit(unit)}"
        if v is None:
            return "n/a", shown_t
        v = scaled(v, unit)
        return ("PASS" if (v <= limit if op == "<=" else v < limit) else "MISS"), shown_t
    if target.startswith(">="):
        limit = float(target[2:])
        return ("n/a" if r is None else ("PASS" if r >= limit else "MISS")), f"≥{limit:g}x"
    limit = float(target.lstrip("<="))
    return ("n/a" if r is None else ("PASS" if r <= limit else "MISS")), f"≤{limit:g}x"


class Table:
    def __init__(self, title):
        self.title, self.header, self.rows, self.notes = title, None, [], []
        self.extra = []  # (A, B) of the #ratio lines: extra A/B ratio columns


def parse(src):
    meta, tables = {}, [Table("")]
    with open(src) as f:
        for line in f:
            cells = line.rstrip("\n").split("\t")
            cur = tables[-1]
            if cells[0] == "#meta":
                meta[cells[1]] = cells[2] if len(cells) > 2 else ""
            elif cells[0] == "#note":
                cur.notes.append(cells[1] if len(cells) > 1 else "")
            elif cells[0] == "#ratio":
                cur.extra.append((cells[1], cells[2]))
            elif cells[0] == "#table":
                title = cells[1] if len(cells) > 1 else ""
                if cur.header is None and not cur.rows:
                    cur.title = title
                    continue
                tables.append(Table(title))
            elif cur.header is None:
                cur.header = cells
            else:
                cur.rows.append(cells + [""] * (len(cur.header) - len(cells)))
    tables = [t for t in tables if t.header is not None or t.notes]
    if not tables or all(t.header is None for t in tables):
        sys.exit(f"report: {src} has no header line")
    return meta, tables


def build(t):
    """Computes ratios and results of table t: (cols, text rows, json rows, missed)."""
    if t.header is None:
        return [], [], [], False
    tools = t.header[3:]
    subject, baseline = tools[0], tools[1]
    others = [x for x in tools if x != baseline]
    extra = [(a, b) for a, b in t.extra if a in tools and b in tools]
    out, missed = [], False
    for r in t.rows:
        label, unit, target = r[0], r[1], r[2]
        vals = {x: num(v) for x, v in zip(tools, r[3:])}
        ratios = {x: ratio(vals[x], vals[baseline]) for x in others}
        extra_ratios = {f"{a}/{b}": ratio(vals[a], vals[b]) for a, b in extra}
        result, target_shown = judge(target, unit, vals[subject], ratios[subject])
        missed = missed or (target != "" and result != "PASS")
        out.append({"metric": label, "unit": shown_unit(unit), "raw_unit": unit, "values": vals,
                    "ratio": ratios[subject], "ratios": ratios,
                    "extra_ratios": extra_ratios, "target": target,
                    "target_shown": target_shown, "result": result})
    # ratio columns: x/BASELINE for every other column x, each followed by its #ratio x/B columns
    rcols = []  # (column name, key in "ratios" or None, key in "extra_ratios" or None)
    for x in others:
        rcols.append((f"{x}/{baseline}", x, None))
        rcols += [(f"{a}/{b}", None, f"{a}/{b}") for a, b in extra if a == x]
    rcols += [(f"{a}/{b}", None, f"{a}/{b}") for a, b in extra if a not in others]

    def rcell(o, k, e):
        r = o["ratios"][k] if k is not None else o["extra_ratios"][e]
        return "" if r is None else f"{r:.3f}"
    cols = ["metric", "unit"] + tools + [c for c, _, _ in rcols] + ["target", "result"]
    table = []
    for o in out:
        table.append([o["metric"], o["unit"]] + [shown(o["values"][x], o["raw_unit"]) for x in tools]
                     + [rcell(o, k, e) for _, k, e in rcols]
                     + [o["target_shown"], o["result"]])
    return cols, table, out, missed


def main():
    section, src, prefix = sys.argv[1:4]
    meta, tables = parse(src)
    built = [build(t) for t in tables]
    missed = any(b[3] for b in built)

    for t, (cols, table, _, _) in zip(tables, built):
        if t.title:
            print(f"[{t.title}]")
        if cols:
            widths = [max(len(c), *(len(row[i]) for row in table)) if table else len(c)
                      for i, c in enumerate(cols)]

            def line(cells):
                return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths)))
            print(line(cols))
            print("  ".join("-" * w for w in widths))
            for row in table:
                print(line(row))
        for n in t.notes:
            print(n)
        print()

    with open(prefix + ".md", "w") as f:
        f.write(f"# keepfs benchmark: {section}\n\n")
        for k, v in meta.items():
            f.write(f"- {k}: {v}\n")
        for t, (cols, table, _, _) in zip(tables, built):
            if t.title:
                f.write(f"\n## {t.title}\n")
            if cols:
                f.write("\n| " + " | ".join(cols) + " |\n")
                f.write("|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|\n")
                for row in table:
                    f.write("| " + " | ".join(c or " " for c in row) + " |\n")
            if t.notes:
                f.write("\n" + "\n".join(f"- {n}" for n in t.notes) + "\n")

    def jrows(out):
        return [{k: v for k, v in o.items() if k not in ("raw_unit", "target_shown")}
                | {"unit": o["raw_unit"]} for o in out]
    jtables = []
    for t, (_, _, out, _) in zip(tables, built):
        tools = t.header[3:] if t.header else []
        jtables.append({"title": t.title, "subject": tools[0] if tools else None,
                        "baseline": tools[1] if len(tools) > 1 else None,
                        "rows": jrows(out), "notes": t.notes})
    first = next(j for j in jtables if j["subject"] is not None)
    with open(prefix + ".json", "w") as f:
        # subject, baseline, rows and notes of the first table stay at the top level, as before
        json.dump({"section": section, "meta": meta, "subject": first["subject"],
                   "baseline": first["baseline"], "rows": first["rows"],
                   "notes": [n for j in jtables for n in j["notes"]], "tables": jtables}, f, indent=2)
        f.write("\n")
    sys.exit(4 if missed else 0)


if __name__ == "__main__":
    main()
