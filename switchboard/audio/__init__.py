"""Audio building blocks: G.711, resampling, the VAD segmenter, echo similarity, WAV files."""
