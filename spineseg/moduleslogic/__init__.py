"""What the two Slicer modules do that needs neither Qt nor MRML, tested with pytest.

One module per concept: :mod:`.process` (a ``spineseg ... --json`` child process, its
events, its failure sentence, killing its process tree), :mod:`.segment_command` and
:mod:`.training_command` (the command lines the panels run), :mod:`.run_monitor` (a
run's events as log lines, progress and curves), :mod:`.run_folder` (what a train or cv
run folder holds), :mod:`.levels_readout` (the per-level read-out as the Segment panel
shows it), :mod:`.results_table` (the cross-validation table),
:mod:`.dataset_check` (a training folder checked case by case), :mod:`.requirements`
(the Python packages a backend needs, and installing them), :mod:`.model_registry`
(the bundled and the user's models) and :mod:`.headless_training` (the body of
``SpineSegTraining/Scripts/train.py``).

``SpineSegUNet`` and ``SpineSegTraining`` import from here and never from each other.
Importing these modules does not import torch.
"""
