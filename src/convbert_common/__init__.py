"""The framework-free ground floor of convbert: every fact that is not tensor code, in NumPy.

``config`` / ``presets`` (hyper-parameters, HF ``config.json``), ``shapes`` (head arithmetic),
``heads`` (the task table), ``checks`` (input and label validation for both frameworks),
``tokenizer``, ``weight_map`` and ``layouts`` (weight names and layouts in every format),
``checkpoint`` and ``formats`` (reading and writing checkpoint files). Nothing here imports
``convbert_pt``, ``convbert_tf`` or ``convbert_tools``, and no framework at module level.
"""
