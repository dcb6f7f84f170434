"""``python -m noiseclr_lab.cli`` (and ``accelerate launch -m noiseclr_lab.cli train ...``)."""

from noiseclr_lab.cli import main

raise SystemExit(main())
