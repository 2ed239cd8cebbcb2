"""Applications tier: the pretraining engine, the workflow plan, reports, the MLflow mirror, job launching, the
command line and the demo. They compose the domain tier (augment, data, nets, losses, methods, config, evaluate) and
are never imported by it (docs/architecture.md)."""
