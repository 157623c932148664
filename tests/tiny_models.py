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
