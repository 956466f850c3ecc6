"""Word lists of the synthetic marketplace: categories and latent-bound facets, each with synonyms.

Every facet owns a few dimensions of the latent space (:data:`FACETS`); each of its word groups has a
prototype direction there, and a group is a list of synonyms that mean the same thing. Titles and
queries pick a group from the item's latent and then a synonym from the group, so two texts about
the same item share meaning but not always words.
"""

from __future__ import annotations

from dataclasses import dataclass

LATENT_DIM = 16


@dataclass(frozen=True)
class Facet:
    """A family of words bound to a subspace of the latent.

    Attributes:
        name: the facet name (``colour``, ``material``, ...).
        dims: the latent dimensions it reads.
        groups: word groups; each group is a tuple of synonyms.
    """

    name: str
    dims: tuple[int, ...]
    groups: tuple[tuple[str, ...], ...]


# The 8 colour groups sit at 45-degree steps of the angle in latent dims (0, 1); images map the same
# angle to a hue (see images.py), so the colour word and the rendered colour agree.
COLOUR = Facet("colour", (0, 1), (
    ("red", "crimson", "scarlet"),
    ("orange", "tangerine", "coral"),
    ("yellow", "golden", "mustard"),
    ("green", "emerald", "olive"),
    ("teal", "turquoise", "aqua"),
    ("blue", "navy", "azure"),
    ("purple", "violet", "plum"),
    ("pink", "magenta", "fuchsia"),
))
TONE = Facet("tone", (2,), (
    ("pale", "light", "pastel"),
    ("dark", "deep", "muted"),
))
MATERIAL = Facet("material", (3, 4, 5), (
    ("cotton", "organic cotton", "cotton-blend"),
    ("linen", "flax", "linen-blend"),
    ("wool", "merino", "knit"),
    ("silk", "satin", "silky"),
    ("leather", "faux leather", "suede"),
    ("denim", "canvas", "twill"),
    ("metal", "steel", "aluminium"),
    ("wooden", "wood", "bamboo"),
))
STYLE = Facet("style", (6, 7, 8), (
    ("boho", "bohemian", "hippie"),
    ("vintage", "retro", "antique"),
    ("minimalist", "minimal", "sleek"),
    ("classic", "timeless", "traditional"),
    ("sporty", "athletic", "active"),
    ("elegant", "chic", "luxe"),
    ("rustic", "farmhouse", "country"),
    ("modern", "contemporary", "urban"),
))
USE = Facet("use", (9, 10, 11), (
    ("summer", "beach", "holiday"),
    ("winter", "cozy", "warm"),
    ("office", "work", "business"),
    ("party", "evening", "cocktail"),
    ("outdoor", "hiking", "camping"),
    ("travel", "commuter", "on-the-go"),
    ("kids", "children's", "junior"),
    ("everyday", "casual", "daily"),
))
# Pattern groups at 72-degree steps of the angle in dims (12, 13); images draw the same texture.
PATTERN = Facet("pattern", (12, 13), (
    ("striped", "stripes", "pinstripe"),
    ("polka dot", "dotted", "spotted"),
    ("checked", "plaid", "gingham"),
    ("floral", "flower print", "botanical"),
    ("solid", "plain", "block colour"),
))
SIZE = Facet("size", (14,), (
    ("mini", "small", "compact"),
    ("oversized", "large", "big"),
))

FACETS: tuple[Facet, ...] = (COLOUR, TONE, MATERIAL, STYLE, USE, PATTERN, SIZE)

# What an item's picture shows (images.py): colour, tone, pattern, size and the shape's roundness
# (dim 15, which no word names). Ad clicks weigh these above the functional facets (simulate.py).
APPEARANCE_DIMS: tuple[int, ...] = (*COLOUR.dims, *TONE.dims, *PATTERN.dims, *SIZE.dims, 15)

# Probability that a title names each facet (the category is always named). Order in the title:
TITLE_ORDER = ("size", "tone", "colour", "pattern", "material", "style", "use")
TITLE_KEEP = {"colour": 0.95, "tone": 0.35, "material": 0.9, "style": 0.8, "use": 0.65,
              "pattern": 0.5, "size": 0.3}

CATEGORIES: tuple[tuple[str, ...], ...] = (
    ("dress", "gown", "frock"),
    ("shirt", "blouse", "top"),
    ("sneakers", "trainers", "running shoes"),
    ("boots", "ankle boots", "booties"),
    ("handbag", "purse", "tote"),
    ("backpack", "rucksack", "daypack"),
    ("watch", "wristwatch", "timepiece"),
    ("necklace", "pendant", "choker"),
    ("lamp", "light", "lantern"),
    ("chair", "armchair", "seat"),
    ("sofa", "couch", "loveseat"),
    ("mug", "cup", "tumbler"),
    ("vase", "planter", "urn"),
    ("rug", "carpet", "mat"),
    ("blanket", "throw", "quilt"),
    ("phone case", "phone cover", "case"),
    ("headphones", "earphones", "headset"),
    ("tent", "shelter", "canopy"),
    ("jacket", "coat", "parka"),
    ("sunglasses", "shades", "sunnies"),
)

# Words that carry no latent information: title fillers and query noise.
TITLE_FILLERS = ("women's", "men's", "unisex", "new", "premium", "set of 2", "handmade", "2024 edition")
QUERY_NOISE = ("cheap", "best", "buy", "sale", "gift", "for her", "for him", "nice", "cute", "deal",
               "online", "free shipping", "top rated", "discount", "near me")
