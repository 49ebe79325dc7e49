"""Names and defaults shared by the SaSi Scipion plugin (no pyworkflow import)."""

SASI_ENV_ACTIVATION = "SASI_ENV_ACTIVATION"
"""Plugin variable: shell command that activates a separate environment holding the
``sasi`` command (for example ``. /opt/sasi/bin/activate``). Empty (default):
run ``sasi`` from Scipion's own environment."""
SASI_ENGINE_SOURCE = "SASI_ENGINE_SOURCE"
"""Plugin variable: the sasi-scipion source tree or wheel that ``scipion3 installb
sasi-engine`` installs (with its ``engine`` extra). Empty (default): the source tree
this plugin runs from, when it is one (an editable install)."""
SASI_ENV_NAME = "sasi-engine"
"""Name of the optional separate environment that ``defineBinaries`` can install."""
SASI_DEFAULT_VERSION = "0.1.0"

BOX_TO_RADIUS = 0.5
"""Default particle radius from a coordinate set's box size: half the box."""
PICKS_SUFFIX = "_picks.tsv"
LABELS_SUFFIX = "_labels.tsv"

OUTPUT_MODEL = "outputModel"
OUTPUT_COORDINATES = "output3DCoordinates"
"""Pick's output holding every class's picks (group id = 1-based class index)."""
CLASS_OUTPUT_PREFIX = "outputCoordinates_"
"""Pick's per-class outputs are ``outputCoordinates_<class>``."""
