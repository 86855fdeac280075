"""Analyses of a stream and of a run beyond the evaluation matrix (docs/ANALYSIS.md):

- :mod:`ticlip.analysis.nouns`: the WordNet nouns a caption mentions;
- :mod:`ticlip.analysis.shift`: distribution shift between steps as pure functions (FID of image
  embeddings, total-variation distance of noun distributions) and the per-step concept drift;
- :mod:`ticlip.analysis.forgetting`: per-concept retrieval of the model that first saw a concept
  against the last model (pure functions);
- :mod:`ticlip.analysis.files`: the files these write and the report reads;
- :mod:`ticlip.analysis.run_shift`, :mod:`ticlip.analysis.run_forgetting`: the drivers behind
  ``ticlip analyze shift`` and ``ticlip analyze forgetting`` (:mod:`ticlip.analysis.cli`).
"""
