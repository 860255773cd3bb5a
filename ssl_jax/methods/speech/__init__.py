"""Speech methods: data2vec-audio, HuBERT, wav2vec 2.0 (raw-waveform encoders)."""
