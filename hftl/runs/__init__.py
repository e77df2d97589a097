"""One run from config to `model/` (`finetune`), and what a finished run is used for: `model/`, card and
metrics (`export`), plots, Hub push, `hftl evaluate` / `hftl predict` (`inference`), batch predictions into a file.
"""
