"""nlpipe's own model families: one folder per architecture (configuration_*.py + modeling_*.py).

Files inside a model folder import only their siblings (``from .configuration_x import X``) and
never ``nlpipe`` itself: save_pretrained copies them next to the weights for trust_remote_code.
"""

# First, before any model module: importing transformers runs nlpipe's registration hook
# (nlpipe/_registration.py), which imports the model modules; none of them may be mid-import then.
import transformers  # noqa: E402, F401
