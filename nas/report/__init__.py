"""The report: tables of a study's trials, its interactive page, figures (interactive, static, write-up) and the text beside them."""
