"""The operator's kopf registry: every keyward handler registers here, nowhere else."""

import kopf

registry = kopf.OperatorRegistry()
