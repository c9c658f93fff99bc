"""Ablation of GA-DMS on a synthetic testbed: the paper's Table 4 rows x seeds (``gadms ablate``).

``rows`` names the rows and their parameter overrides; ``testbed`` builds the synthetic corpora (cached);
``base`` the base stage (the tiny model pre-trained on clean captions, a stand-in for public CLIP weights,
cached by a hash of its inputs); ``cells`` trains and evaluates one (row, seed); ``report`` the mean +- std
table and the bar chart; ``tracking`` the MLflow parent and child runs; ``run`` ties them together; ``auroc``
measures how well token scores find injected wrong words from the base model and after GA-DMS.
"""
