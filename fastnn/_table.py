"""A plain-text or Markdown table for the bench commands' output."""


def print_table(head, lines, markdown):
    """Print rows of strings ``lines`` under ``head``, right-aligned in columns (a Markdown
    table when ``markdown``)."""
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    if markdown:
        print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in lines:
            print("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    else:
        print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
        for r in lines:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
