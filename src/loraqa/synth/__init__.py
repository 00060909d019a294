"""Training data from documents: question-answer pairs written from passages, checked, and filtered.

`sampling` picks passages document by document; `candidates` proposes answers in a passage;
`generators` write questions for them (a question-generation adapter; an OpenAI-compatible chat
endpoint); `checks` keeps a pair only when its answer is quoted from the passage, its question is
new, and a reader answers it the same way from the passage (the round-trip filter of Alberti et
al. 2019); `pipeline` runs them and writes loraqa's data format with each pair's provenance.
"""

from loraqa.synth.pipeline import SynthReport, synthesise

__all__ = ["SynthReport", "synthesise"]
