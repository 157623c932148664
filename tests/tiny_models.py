"""The smallest settings of each registry model: tests that run recipes for a few steps use them."""

TINY_MODEL = {
    "rnn_tagger": ["model.hidden_size=16", "model.embedding_dim=16"],
    "bert": ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
             "model.intermediate_size=64"],
    "rnn_seq2seq": ["model.hidden_size=16", "model.embedding_dim=16"],
    "marian": ["model.d_model=32", "model.encoder_layers=1", "model.decoder_layers=1",
               "model.encoder_attention_heads=2", "model.decoder_attention_heads=2", "model.encoder_ffn_dim=64",
               "model.decoder_ffn_dim=64"],
    "rnn_lm": ["model.hidden_size=16", "model.embedding_dim=16"],
    "gpt2": ["model.n_embd=32", "model.n_layer=1", "model.n_head=2"],
}

TINY_CRF_TAGGER = [
    "model.hidden_size=16", "model.embedding_dim=16", "model.char_hidden_size=8", "model.char_embedding_dim=8",
    "data.max_train_examples=300", "data.max_eval_examples=40",
    # The recipe lower-cases words, so entities must be learnt from the tiny char-BiLSTM through the recipe's two
    # word-BiLSTM layers: 120 steps at a high rate make it predict entities at all, which the tests comparing
    # entities need (4-11 on the pipeline test's texts over seeds 1-4 and in float32; 60 steps at 0.02 gave none).
    "train.max_steps=120", "train.learning_rate=0.03",
]
"""`ner-bilstm-crf` overrides for a tagger that trains in seconds on the sample data and still finds entities."""
