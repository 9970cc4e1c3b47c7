"""Everything that runs many runs or many models, above the Python face (:mod:`tuneforge.api`):
``compare`` (methods x seeds), ``curve`` (learning curves), ``continual`` (stage sequences),
``active`` (label suggest/simulate), ``robustness`` (clean vs perturbed scoring), ``checks`` (``data
check``, its label-noise folds), ``convert`` (Label Studio / doccano), and ``multirun`` (what they share)."""
