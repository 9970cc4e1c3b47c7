"""What tuneforge writes to disk: atomic writes and package paths (:mod:`.paths`), the saved model
folder's files (:mod:`.model_folder`) and the run folder's lock, staging and swap (:mod:`.run_folder`).
Nothing here knows a task or a method: reading a model back as a predictor is :mod:`tuneforge.loading`."""
