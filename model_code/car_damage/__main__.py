"""``python -m car_damage ...``: see ``car_damage.cli``."""

from car_damage.cli import main

raise SystemExit(main())
