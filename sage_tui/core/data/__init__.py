"""Fine-tuning datasets: reading files with line numbers, the five formats, placeholders,
token previews and the docs-folder builder.

`loading` is the entry point (`load_dataset_file`); the names most callers need are
re-exported here. Only the standard library is imported at module level: the preview's
tokenizer comes from the caller.
"""

from sage_tui.core.data.loading import *  # noqa: F403
from sage_tui.core.data.loading import __all__  # noqa: F401
