"""Built-in sample data: small, deterministic, and learnable within a minute of training.

:func:`make_sample` returns train/validation/test splits in exactly the record formats of
:mod:`nlpipe.data.readers`, so every task and recipe can run without a data download:

- ``"ner"``: ``{"tokens", "tags"}``, news-like sentences with PER/ORG/LOC/MISC entities in IOB2.
  Entities come from small gazetteers placed in context patterns; some names appear only in
  validation/test, and a few words are ambiguous (``Jordan`` is a person or a country), so a
  lookup tagger is clearly useful but not perfect.
- ``"translation"``: ``{"source", "target"}``, a German-like source language translated word by
  word through :data:`TRANSLATION_LEXICON`, with two reordering rules (verb last, time first).
- ``"summarization"``: ``{"source", "target"}``, short chats with distractor turns whose summary
  is a deterministic function of the one or two turns that matter.
- ``"lm"``: ``{"text"}``, lowercased lines from a small probabilistic grammar with agreement and
  selectional restrictions, so a model can get far below the unigram perplexity.

Everything is drawn from ``random.Random`` instances seeded from ``(kind, seed, split)``; global
random state is never touched, and the same seed always gives the same data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable

from nlpipe.errors import NlpipeError

SAMPLE_SIZES: dict[str, dict[str, int]] = {
    "ner": {"train": 1500, "validation": 200, "test": 200},
    "translation": {"train": 4000, "validation": 300, "test": 300},
    "summarization": {"train": 2000, "validation": 200, "test": 200},
    "lm": {"train": 4000, "validation": 400, "test": 400},
}
SAMPLE_KINDS: tuple[str, ...] = tuple(SAMPLE_SIZES)
_SPLITS = ("train", "validation", "test")


def make_sample(kind: str, seed: int = 0) -> dict[str, list[dict]]:
    """Generate the built-in sample data set ``kind``.

    Args:
        kind: one of :data:`SAMPLE_KINDS` (``"ner"``, ``"translation"``, ``"summarization"``, ``"lm"``).
        seed: the same seed always gives identical output.

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}`` with records in the reader formats
        and the sizes of :data:`SAMPLE_SIZES`. Validation and test records avoid repeating train
        records where the grammar allows it.

    Raises:
        NlpipeError: unknown ``kind``.
    """
    generators: dict[str, tuple[Callable[[random.Random, str], dict], Callable[[dict], Hashable]]] = {
        "ner": (_ner_sentence, lambda r: tuple(r["tokens"])),
        "translation": (_translation_pair, lambda r: r["source"]),
        "summarization": (_summarization_pair, lambda r: r["source"]),
        "lm": (_lm_line, lambda r: r["text"]),
    }
    if kind not in generators:
        raise NlpipeError(f"unknown sample kind {kind!r}; choose one of: {', '.join(SAMPLE_KINDS)}")
    generate, key = generators[kind]
    splits: dict[str, list[dict]] = {}
    seen: set[Hashable] = set()
    for split in _SPLITS:
        # One generator per split, so the test set does not change when the train size does.
        rng = random.Random(f"nlpipe-sample:{kind}:{seed}:{split}")
        records = []
        for _ in range(SAMPLE_SIZES[kind][split]):
            record = generate(rng, split)
            if split != "train":
                # A few retries keep held-out data out of train; tiny grammars may still collide.
                for _retry in range(20):
                    if key(record) not in seen:
                        break
                    record = generate(rng, split)
            records.append(record)
        if split == "train":
            seen = {key(record) for record in records}
        splits[split] = records
    return splits


def _zipf_choice(rng: random.Random, items: list | tuple, exponent: float = 1.0):
    """Pick from ``items`` with probability proportional to 1 / rank**exponent (natural-text skew)."""
    weights = [1.0 / (rank + 1) ** exponent for rank in range(len(items))]
    return rng.choices(items, weights=weights)[0]


# --------------------------------------------------------------------------------------------- NER

# Gazetteers: (seen in every split, only in validation/test). Multi-token names give I- tags.
_NER_GAZETTEER: dict[str, tuple[list[str], list[str]]] = {
    "PER_FIRST": (
        ["John", "Mary", "Peter", "Anna", "David", "Maria", "Thomas", "Laura", "Michael", "Sarah",
         "James", "Elena", "Paul", "Sofia", "Robert", "Nina", "Chelsea"],
        ["Oliver", "Clara", "Viktor", "Ingrid", "Tomasz"],
    ),
    "PER_LAST": (
        ["Smith", "Miller", "Schmidt", "Rossi", "Dubois", "Tanaka", "Kowalski", "Johnson", "Garcia",
         "Novak", "Berg", "Silva", "Jordan", "Washington"],
        ["Okafor", "Lindqvist", "Haddad", "Moreau", "Petrov"],
    ),
    "ORG": (
        ["Reuters", "Siemens", "Unilever", "Barclays", "Volkswagen", "Nestle", "UEFA", "NATO",
         "Interpol", "Greenpeace", "Chelsea", "Deutsche Bank", "General Motors", "Red Cross",
         "European Commission", "World Bank", "United Nations", "Royal Dutch Shell",
         "Manchester United", "Real Madrid"],
        ["Ericsson", "Heineken", "Aston Villa", "Fiat", "Nordic Energy Group"],
    ),
    "LOC": (
        ["London", "Paris", "Berlin", "Tokyo", "Moscow", "Madrid", "Brazil", "Germany", "France",
         "China", "Kenya", "Canada", "Rome", "Jordan", "Washington", "New York", "South Africa",
         "Hong Kong", "Los Angeles", "Sri Lanka", "Buenos Aires", "New Zealand"],
        ["Oslo", "Lima", "Nairobi", "Costa Rica", "Kuala Lumpur"],
    ),
    # MISC is split by context: nationalities ("the French government") and events ("won the
    # World Cup"); both are tagged MISC.
    "NAT": (
        ["German", "French", "British", "Japanese", "Russian", "Italian", "Brazilian", "Chinese",
         "European", "American"],
        ["Norwegian", "Peruvian", "Kenyan"],
    ),
    "EVENT": (
        ["World Cup", "Olympic Games", "Grand Prix", "Champions League", "Nobel Prize", "Davis Cup"],
        ["Asian Games", "Ryder Cup"],
    ),
}
_NER_UNSEEN_RATE = 0.3  # share of validation/test entities drawn from the unseen names
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_INTEGERS = ["2", "3", "5", "7", "10", "12", "15", "20", "40", "100", "250"]
_NUMBERS = _INTEGERS + ["1.5", "3.2", "0.8", "4.25"]

# Context patterns. <PER>/<ORG>/<LOC>/<NAT>/<EVENT> are entities (the last two tagged MISC);
# <DAY>/<MONTH>/<INT>/<NUM> are capitalised or numeric words tagged O, so capitalisation alone
# is not a perfect cue.
_NER_TEMPLATES = [
    "<PER> visited <LOC> on <DAY> .",
    "<PER> , a spokesman for <ORG> , said the company would cut <INT> jobs .",
    "<ORG> shares rose <NUM> percent in <LOC> on <DAY> .",
    "<ORG> beat <ORG> <INT> - <INT> on <DAY> .",
    "<PER> won the <EVENT> in <LOC> last year .",
    "On <DAY> , <PER> told reporters in <LOC> that talks with <ORG> had failed .",
    "<LOC> and <LOC> signed a trade agreement in <MONTH> .",
    "The <NAT> government said on <DAY> it would send troops to <LOC> .",
    "<PER> ( <LOC> ) <INT> <INT> <INT>",
    "Police in <LOC> arrested <INT> people on <DAY> , a spokesman said .",
    "Prices were mostly unchanged on <DAY> as traders waited for new data .",
    "<PER> joined <ORG> from <ORG> in <MONTH> .",
    "Analysts at <ORG> expect the <NAT> economy to grow by <NUM> percent this year .",
    '<PER> said : " We are very happy with the result . "',
    "The match between <ORG> and <ORG> in <LOC> was postponed because of rain .",
    "<INT> people were killed when a bus crashed near <LOC> on <DAY> .",
    "<PER> and <PER> will meet in <LOC> next week to discuss the <NAT> proposal .",
    "It was not immediately clear whether <ORG> would accept the offer .",
    "<NAT> officials said the <ORG> plan was unacceptable .",
    "He said the market would remain weak until <MONTH> .",
    "<PER> , who lives in <LOC> , finished third in the <EVENT> .",
    "The <ORG> chairman <PER> resigned on <DAY> after <INT> years .",
    "<LOC> 's central bank left interest rates unchanged at <NUM> percent .",
    "Fighting broke out again in <LOC> , the <NAT> news agency reported .",
]
_NER_SLOT_LABELS = {"<PER>": "PER", "<ORG>": "ORG", "<LOC>": "LOC", "<NAT>": "MISC", "<EVENT>": "MISC"}
_NER_LOWERCASE_WHEN_JOINED = {"The", "On", "Police", "Prices", "It", "He", "Analysts", "Fighting"}


def _ner_entity(rng: random.Random, group: str, split: str) -> list[str]:
    """Draw one entity of gazetteer ``group`` as a list of words (unseen names only outside train)."""
    pool = 1 if split != "train" and rng.random() < _NER_UNSEEN_RATE else 0
    if group == "PER":
        first = rng.choice(_NER_GAZETTEER["PER_FIRST"][pool])
        last = rng.choice(_NER_GAZETTEER["PER_LAST"][pool])
        shape = rng.random()
        return [first, last] if shape < 0.6 else [last] if shape < 0.85 else [first]
    return rng.choice(_NER_GAZETTEER[group][pool]).split()


def _ner_clause(rng: random.Random, split: str) -> tuple[list[str], list[str]]:
    """Fill one random template; return (tokens, IOB2 tags)."""
    tokens: list[str] = []
    tags: list[str] = []
    for slot in rng.choice(_NER_TEMPLATES).split():
        if slot in _NER_SLOT_LABELS:
            words = _ner_entity(rng, slot[1:-1], split)
            label = _NER_SLOT_LABELS[slot]
            tokens += words
            tags += [f"B-{label}"] + [f"I-{label}"] * (len(words) - 1)
        else:
            word = {"<DAY>": _DAYS, "<MONTH>": _MONTHS, "<INT>": _INTEGERS, "<NUM>": _NUMBERS}.get(slot)
            tokens.append(rng.choice(word) if word else slot)
            tags.append("O")
    return tokens, tags


def _ner_sentence(rng: random.Random, split: str) -> dict:
    """One sentence of 5-30 tokens: a filled template, sometimes two joined by ', and'."""
    while True:
        tokens, tags = _ner_clause(rng, split)
        if rng.random() < 0.3 and tokens[-1] == ".":
            more_tokens, more_tags = _ner_clause(rng, split)
            if more_tags[0] == "O" and more_tokens[0] in _NER_LOWERCASE_WHEN_JOINED:
                more_tokens[0] = more_tokens[0].lower()
            tokens = tokens[:-1] + [",", "and"] + more_tokens
            tags = tags[:-1] + ["O", "O"] + more_tags
        if 5 <= len(tokens) <= 30:
            return {"tokens": tokens, "tags": tags}


# ------------------------------------------------------------------------------------- translation

# (German, English) nouns by gender; the semantic class decides where a noun may appear.
_NOUNS = {
    "person": [("Mann", "man", "m"), ("Junge", "boy", "m"), ("Lehrer", "teacher", "m"),
               ("Arzt", "doctor", "m"), ("Bäcker", "baker", "m"), ("Frau", "woman", "f"),
               ("Mutter", "mother", "f"), ("Schwester", "sister", "f"), ("Kind", "child", "n"),
               ("Mädchen", "girl", "n")],
    "animal": [("Hund", "dog", "m"), ("Vogel", "bird", "m"), ("Katze", "cat", "f"),
               ("Pferd", "horse", "n")],
    "food": [("Apfel", "apple", "m"), ("Kuchen", "cake", "m"), ("Brot", "bread", "n"),
             ("Suppe", "soup", "f")],
    "reading": [("Brief", "letter", "m"), ("Zeitung", "newspaper", "f"), ("Buch", "book", "n"),
                ("Karte", "map", "f")],
    "thing": [("Ball", "ball", "m"), ("Stuhl", "chair", "m"), ("Blume", "flower", "f"),
              ("Tasche", "bag", "f"), ("Fahrrad", "bicycle", "n"), ("Bild", "picture", "n"),
              ("Geschenk", "gift", "n"), ("Boot", "boat", "n")],
    "place": [("Garten", "garden", "m"), ("Park", "park", "m"), ("Fluss", "river", "m"),
              ("Berg", "mountain", "m"), ("Stadt", "city", "f"), ("Straße", "street", "f"),
              ("Schule", "school", "f"), ("Kirche", "church", "f"), ("Brücke", "bridge", "f"),
              ("Küche", "kitchen", "f"), ("Haus", "house", "n"), ("Dorf", "village", "n")],
}
# Articles by (definiteness, case, gender); all definite forms mean "the", indefinite ones "a".
_ARTICLES = {
    ("def", "nom"): {"m": "der", "f": "die", "n": "das"},
    ("def", "acc"): {"m": "den", "f": "die", "n": "das"},
    ("def", "dat"): {"m": "dem", "f": "der", "n": "dem"},
    ("indef", "nom"): {"m": "ein", "f": "eine", "n": "ein"},
    ("indef", "acc"): {"m": "einen", "f": "eine", "n": "ein"},
    ("indef", "dat"): {"m": "einem", "f": "einer", "n": "einem"},
}
# Attributive adjective endings (real German weak/mixed declension).
_ADJ_ENDINGS = {
    ("def", "nom"): {"m": "e", "f": "e", "n": "e"},
    ("def", "acc"): {"m": "en", "f": "e", "n": "e"},
    ("def", "dat"): {"m": "en", "f": "en", "n": "en"},
    ("indef", "nom"): {"m": "er", "f": "e", "n": "es"},
    ("indef", "acc"): {"m": "en", "f": "e", "n": "es"},
    ("indef", "dat"): {"m": "en", "f": "en", "n": "en"},
}
_ADJECTIVES = [("groß", "big"), ("klein", "small"), ("alt", "old"), ("jung", "young"), ("rot", "red"),
               ("blau", "blue"), ("grün", "green"), ("schön", "beautiful"), ("neu", "new"),
               ("müde", "tired"), ("klug", "clever"), ("still", "quiet")]
# Verbs: (3sg, 1sg, 1pl German; 3sg, base English; object classes or None if intransitive).
_VERBS = [
    ("sieht", "sehe", "sehen", "sees", "see", ("person", "animal", "thing", "place")),
    ("kauft", "kaufe", "kaufen", "buys", "buy", ("food", "reading", "thing")),
    ("liest", "lese", "lesen", "reads", "read", ("reading",)),
    ("findet", "finde", "finden", "finds", "find", ("person", "animal", "thing", "reading")),
    ("trägt", "trage", "tragen", "carries", "carry", ("thing", "food", "reading")),
    ("malt", "male", "malen", "paints", "paint", ("person", "animal", "place", "thing")),
    ("hält", "halte", "halten", "holds", "hold", ("thing", "animal", "reading")),
    ("bringt", "bringe", "bringen", "brings", "bring", ("food", "thing", "reading")),
    ("isst", "esse", "essen", "eats", "eat", ("food",)),
    ("ruft", "rufe", "rufen", "calls", "call", ("person", "animal")),
    ("schläft", "schlafe", "schlafen", "sleeps", "sleep", None),
    ("läuft", "laufe", "laufen", "runs", "run", None),
    ("singt", "singe", "singen", "sings", "sing", None),
    ("wartet", "warte", "warten", "waits", "wait", None),
    ("spielt", "spiele", "spielen", "plays", "play", None),
    ("lacht", "lache", "lachen", "laughs", "laugh", None),
]
_PRONOUNS = [("er", "he", 0), ("ich", "I", 1), ("wir", "we", 2)]  # index into the verb forms
_PREPOSITIONS = [("in", "in"), ("auf", "on"), ("neben", "near"), ("hinter", "behind"),
                 ("unter", "under"), ("bei", "at")]
_ADVERBS = [("schnell", "quickly"), ("langsam", "slowly"), ("leise", "quietly"), ("laut", "loudly"),
            ("gut", "well")]
_TIMES = [("heute", "today"), ("morgen", "tomorrow"), ("jetzt", "now"), ("wieder", "again"),
          ("dort", "there"), ("abends", "tonight")]


def _decline(stem: str, ending: str) -> str:
    """Attach an adjective ending; stems ending in -e ("müde") drop the ending's own e."""
    return stem + ending[1:] if stem.endswith("e") else stem + ending


def _build_lexicon() -> dict[str, str]:
    """Every source word the generator can emit, mapped to its one English translation."""
    lexicon = {".": ".", "und": "and", "mit": "with"}
    for (definiteness, _case), forms in _ARTICLES.items():
        for word in forms.values():
            lexicon[word] = "the" if definiteness == "def" else "a"
    for nouns in _NOUNS.values():
        lexicon.update({german: english for german, english, _gender in nouns})
    for stem, english in _ADJECTIVES:
        for ending in {e for endings in _ADJ_ENDINGS.values() for e in endings.values()}:
            lexicon[_decline(stem, ending)] = english
    for third, first, plural, english_third, english_base, _objects in _VERBS:
        lexicon.update({third: english_third, first: english_base, plural: english_base})
    for pairs in (_PRONOUNS, _PREPOSITIONS, _ADVERBS, _TIMES):
        lexicon.update({german: english for german, english, *_ in pairs})
    return lexicon


TRANSLATION_LEXICON: dict[str, str] = _build_lexicon()
"""Source word -> target word for the ``"translation"`` sample (each source word has one meaning)."""


def _noun_phrase(rng: random.Random, classes: tuple[str, ...], case: str) -> tuple[list[str], list[str]]:
    """A (German, English) noun phrase: article, optional adjective, noun, declined for ``case``."""
    german_noun, english_noun, gender = rng.choice(_NOUNS[rng.choice(classes)])
    # "a apple" is wrong English, so vowel-initial English nouns always take the definite article.
    definiteness = "def" if english_noun[0] in "aeiou" or rng.random() < 0.6 else "indef"
    german = [_ARTICLES[definiteness, case][gender]]
    english = ["the" if definiteness == "def" else "a"]
    if rng.random() < 0.4:
        stem, english_adj = rng.choice(_ADJECTIVES)
        ending = _ADJ_ENDINGS[definiteness, case][gender]
        german.append(_decline(stem, ending))
        english.append(english_adj)
        if english[0] == "a" and english_adj[0] in "aeiou":
            # Keep English grammatical ("an old") without a second article word: use "the".
            german[0], english[0] = _ARTICLES["def", case][gender], "the"
            german[1] = _decline(stem, _ADJ_ENDINGS["def", case][gender])
    return german + [german_noun], english + [english_noun]


def _translation_clause(rng: random.Random) -> tuple[list[str], list[str]]:
    """One clause without the final period. English: S V O ADV PP TIME; source: TIME S O PP ADV V."""
    verb = rng.choice(_VERBS)
    if rng.random() < 0.35:
        german_subj, english_subj, form = rng.choice(_PRONOUNS)
        german_subj, english_subj = [german_subj], [english_subj]
    else:
        german_subj, english_subj = _noun_phrase(rng, ("person", "animal"), "nom")
        form = 0
    german_verb = verb[form]
    english_verb = verb[3] if form == 0 else verb[4]
    german_obj = english_obj = german_adv = english_adv = german_pp = english_pp = []
    german_time = english_time = []
    if verb[5] is not None:
        german_obj, english_obj = _noun_phrase(rng, verb[5], "acc")
    if rng.random() < 0.25:
        german_word, english_word = rng.choice(_ADVERBS)
        german_adv, english_adv = [german_word], [english_word]
    if rng.random() < 0.4:
        german_prep, english_prep = rng.choice(_PREPOSITIONS)
        german_np, english_np = _noun_phrase(rng, ("place",), "dat")
        german_pp, english_pp = [german_prep] + german_np, [english_prep] + english_np
    elif rng.random() < 0.15:
        german_np, english_np = _noun_phrase(rng, ("person", "animal"), "dat")
        german_pp, english_pp = ["mit"] + german_np, ["with"] + english_np
    if rng.random() < 0.3:
        german_word, english_word = rng.choice(_TIMES)
        german_time, english_time = [german_word], [english_word]
    german = german_time + german_subj + german_obj + german_pp + german_adv + [german_verb]
    english = english_subj + [english_verb] + english_obj + english_adv + english_pp + english_time
    return german, english


def _translation_pair(rng: random.Random, split: str) -> dict:
    """One sentence pair of 3-15 tokens each (equal lengths: the translation is word by word)."""
    while True:
        german, english = _translation_clause(rng)
        if rng.random() < 0.2:
            more_german, more_english = _translation_clause(rng)
            german, english = german + ["und"] + more_german, english + ["and"] + more_english
        if 3 <= len(german) + 1 <= 15:
            return {"source": " ".join(german + ["."]), "target": " ".join(english + ["."])}


# ----------------------------------------------------------------------------------- summarization

_NAMES = ["Anna", "Tom", "Kate", "Ben", "Lisa", "Mark", "Emma", "Jack", "Sara", "Paul", "Mia", "Nick",
          "Julia", "Sam", "Olivia", "Leo", "Hannah", "Max", "Eva", "Adam"]
_ACTIONS = ["buy milk", "buy bread", "call mum", "clean the kitchen", "book the tickets",
            "pick up the kids", "fix the bike", "bring the cake", "walk the dog", "send the report",
            "water the plants", "cook dinner", "pay the rent", "return the books", "wash the car",
            "feed the cat", "print the photos", "order pizza", "take out the trash", "call the plumber"]
_WHEN = ["tomorrow", "tonight", "today", "on Monday", "on Friday", "on Saturday", "after work",
         "this weekend", "in the morning", "next week"]
_PLACES = ["the cafe", "the station", "the cinema", "the park", "the office", "the gym", "the library",
           "the mall"]
_HOURS = ["5 pm", "6 pm", "7 pm", "noon", "8 am", "10 am", "3 pm"]
_ACCEPT = ["sure, no problem", "ok, I will", "yes, I can do that", "sure!", "no problem :)"]
_REFUSE = ["sorry, I can't", "no, I'm busy", "sorry, no time", "I can't, sorry"]
_CHATTER = ["hi!", "hey", "how are you?", "fine, thanks", "lol", ":)", "ok", "cool", "what's up?",
            "nothing much", "the weather is terrible today", "did you see the game yesterday?",
            "I'm so tired", "haha", "see you later!", "bye!", "good night", "ok thanks!", "great",
            "I'm at work now", "my phone is almost dead"]


def _summarization_pair(rng: random.Random, split: str) -> dict:
    """One chat of 3-8 turns and its summary, a fixed function of the key turns.

    Schemas: an announcement ("I will X Y."), a request that is accepted or refused, or a meeting
    proposal; the remaining turns are chatter that the summary ignores.
    """
    speaker, other = rng.sample(_NAMES, 2)
    schema = rng.choice(("announce", "accept", "refuse", "meet"))
    action, when = rng.choice(_ACTIONS), rng.choice(_WHEN)
    if schema == "announce":
        key = [(speaker, f"I will {action} {when}.")]
        summary = f"{speaker} will {action} {when}."
    elif schema == "accept":
        key = [(other, f"can you {action} {when}?"), (speaker, rng.choice(_ACCEPT))]
        summary = f"{speaker} will {action} {when}."
    elif schema == "refuse":
        key = [(other, f"can you {action} {when}?"), (speaker, rng.choice(_REFUSE)),
               (other, "ok, then I will do it myself")]
        summary = f"{speaker} can't {action} {when}, so {other} will do it."
    else:
        place, hour = rng.choice(_PLACES), rng.choice(_HOURS)
        key = [(speaker, f"let's meet at {place} at {hour}"), (other, "ok, see you there")]
        summary = f"{speaker} and {other} will meet at {place} at {hour}."
    n_turns = rng.randint(max(3, len(key)), 8)
    n_before = rng.randint(0, n_turns - len(key))
    people = [speaker, other]

    def chatter(count: int) -> list[tuple[str, str]]:
        return [(rng.choice(people), rng.choice(_CHATTER)) for _ in range(count)]

    turns = chatter(n_before) + key + chatter(n_turns - len(key) - n_before)
    return {"source": "\n".join(f"{name}: {text}" for name, text in turns), "target": summary}


# ---------------------------------------------------------------------------------------------- LM

# Singular/plural forms make agreement a dependency the model must carry across adjectives and PPs.
_LM_NOUNS = {
    "agent": [("cat", "cats"), ("dog", "dogs"), ("child", "children"), ("farmer", "farmers"),
              ("teacher", "teachers"), ("student", "students"), ("bird", "birds"), ("doctor", "doctors"),
              ("king", "kings"), ("woman", "women"), ("man", "men"), ("baker", "bakers")],
    "food": [("apple", "apples"), ("cake", "cakes"), ("fish", "fish"), ("carrot", "carrots"),
             ("egg", "eggs"), ("sandwich", "sandwiches")],
    "text": [("book", "books"), ("letter", "letters"), ("story", "stories"), ("newspaper", "newspapers"),
             ("poem", "poems")],
    "place": [("garden", "gardens"), ("house", "houses"), ("market", "markets"), ("forest", "forests"),
              ("river", "rivers"), ("village", "villages"), ("kitchen", "kitchens")],
}
_LM_VERBS = [  # (singular, plural, object class or None)
    ("eats", "eat", "food"), ("cooks", "cook", "food"), ("buys", "buy", "food"),
    ("reads", "read", "text"), ("writes", "write", "text"), ("likes", "like", "text"),
    ("sees", "see", "agent"), ("helps", "help", "agent"), ("visits", "visit", "place"),
    ("sleeps", "sleep", None), ("sings", "sing", None), ("waits", "wait", None), ("works", "work", None),
]
_LM_ADJECTIVES = {  # per noun class, so adjectives also carry information about the next noun
    "agent": ["old", "young", "happy", "hungry", "little", "clever"],
    "food": ["fresh", "red", "sweet", "big", "warm"],
    "text": ["long", "short", "funny", "old", "sad"],
    "place": ["big", "small", "quiet", "old", "green"],
}
_LM_ADVERBS = ["today", "again", "slowly", "every day", "at night", "in the morning", "quietly"]
_LM_PREPOSITIONS = ["in", "near", "behind"]


def _lm_noun_phrase(rng: random.Random, noun_class: str, plural: bool) -> list[str]:
    """Determiner, optional adjective(s), noun; determiners agree in number."""
    singular_form, plural_form = _zipf_choice(rng, _LM_NOUNS[noun_class])
    determiner = _zipf_choice(rng, ["the", "some", "many", "these", "two"] if plural
                              else ["the", "a", "this", "every", "my"])
    words = [determiner]
    while rng.random() < 0.35 and len(words) < 3:
        words.append(_zipf_choice(rng, _LM_ADJECTIVES[noun_class]))
    words.append(plural_form if plural else singular_form)
    return words


def _lm_clause(rng: random.Random, depth: int = 0) -> list[str]:
    """Subject (optionally with a place PP) + agreeing verb + selected object + adverb/relative clause."""
    plural = rng.random() < 0.4
    words = _lm_noun_phrase(rng, "agent", plural)
    if rng.random() < 0.25:
        # The PP separates subject and verb, so agreement needs more than a bigram of context.
        words += [rng.choice(_LM_PREPOSITIONS)] + _lm_noun_phrase(rng, "place", rng.random() < 0.3)
    singular_verb, plural_verb, object_class = _zipf_choice(rng, _LM_VERBS, exponent=0.7)
    words.append(plural_verb if plural else singular_verb)
    if object_class is not None:
        words += _lm_noun_phrase(rng, object_class, rng.random() < 0.4)
    if rng.random() < 0.3:
        words += _zipf_choice(rng, _LM_ADVERBS).split()
    if depth == 0 and rng.random() < 0.25:
        words += [rng.choice(["because", "and", "while"])] + _lm_clause(rng, depth + 1)
    return words


def _lm_line(rng: random.Random, split: str) -> dict:
    """One lowercased line of 5-20 words."""
    while True:
        words = _lm_clause(rng)
        if 5 <= len(words) <= 20:
            return {"text": " ".join(words)}
