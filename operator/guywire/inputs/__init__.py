"""Reading what ``guywire check`` is given: manifests from files, directories and stdin, with their limits
(``loader``), and which objects form one cluster, each definition judged (``clusters``). Pure."""
