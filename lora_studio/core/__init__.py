"""The torch-free, Qt-free core: every name and enumeration (`names`), the input error
(`errors`), atomic file writes (`atomic`) and the adapter's specification (`spec`). Everything
above (config, engine, cli, ui) imports it; it imports nothing of theirs."""
