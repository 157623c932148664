"""nlpipe's own model families: one folder per architecture (configuration_*.py + modeling_*.py).

Files inside a model folder import only their siblings (``from .configuration_x import X``) and
never ``nlpipe`` itself: save_pretrained copies them next to the weights for trust_remote_code.
"""
