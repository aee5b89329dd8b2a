"""The optional compiled build of the hot modules (mypyc): which modules (``modules``), how it is
built (``build``, ``make compile``) and how it is used only while it matches its sources
(``finder``). Without a build, everything runs as pure Python."""
