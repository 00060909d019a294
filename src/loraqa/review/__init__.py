"""People check generated or uncertain question-answer pairs in Label Studio: `label_studio`
holds its formats, `jobs` the export and import commands."""
