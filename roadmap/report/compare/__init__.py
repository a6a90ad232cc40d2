"""One comparison tool for any set of studies: `python -m roadmap.report.compare <spec.yaml>`.

A spec (YAML, validated: spec.py) declares named studies (sets of kept runs drawn from one or more
folders, with filters, seeds and expectations), named paired contrasts (reference.yaml's or its own),
hypotheses (a measure and a named decision rule: rules.py), figures and a cap. From the run directories
alone the tool gives each study's Δ ± SE per contrast, differences between studies with their SE,
scores against the paper, the verdicts, the figures, the cost against the cap, and a study page's
generated block. The format, with examples: docs/compare.md.

  spec.py      the spec: parse and validate (SpecError: one line naming the key)
  studies.py   runs -> each study's top-1 by step and seed; duplicates and broken expectations refused; cost
  analysis.py  contrasts, scores, measurements, verdicts
  rules.py     the decision rules a spec can name
  render.py    verdicts.md and the page block
  figures.py   the contrasts figure and the several-trajectories figure
  cli.py       the command
"""
