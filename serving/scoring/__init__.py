"""Features in, decisions out: the loaded model and its engine (runtime), adaptive
micro-batching (batching), the per-worker scorer (scorer), a challenger beside the champion
(challenger) and SHAP explanations (explain). Above contract and telemetry."""
