"""MkDocs hook: put the config reference, rendered from the trainlab.config package, into config.md.

docs/config.md holds an introduction and, between the two markers below, a note for readers of the
raw file; at build time that part is replaced by trainlab.config.reference.render_markdown(), so the
site's page is the typed config itself and cannot disagree with it.
"""

import re

from mkdocs.exceptions import PluginError

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "config.md":
        return markdown
    from trainlab.config.reference import missing_descriptions, render_markdown

    missing = missing_descriptions()
    if missing:
        raise PluginError(f"config keys without a description in trainlab/config/: {', '.join(missing)}")
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(markdown):
        raise PluginError(f"docs/config.md lacks the markers {START} ... {END}")
    return pattern.sub(lambda _: render_markdown(level=2), markdown, count=1)
