"""
@article{Adethya2025,
title = "SaSi: A Self-augmented and Self-interpreted Deep Learning Approach for Few-shot Cryo-ET Particle Detection",
author = "Adethya, Gokul and Mantha, Bhanu Pratyush and Wang, Tianyang and Li, Xingjian and Xu, Min",
journal = "arXiv",
volume = "2505.19948",
year = "2025",
doi = "https://doi.org/10.48550/arXiv.2505.19948"
}

@article{Moebel2021,
title = "Deep learning improves macromolecule identification in 3D cellular cryo-electron tomograms",
author = "Moebel, Emmanuel and Martinez-Sanchez, Antonio and Lamm, Lorenz and Righetto, Ricardo D. and Wietrzynski, Wojciech and Albert, Sahradha and Lariviere, Damien and Fourmentin, Eric and Pfeffer, Stefan and Ortiz, Julio and Baumeister, Wolfgang and Peng, Tingying and Engel, Benjamin D. and Kervrann, Charles",
journal = "Nature Methods",
volume = "18",
pages = "1386--1394",
year = "2021",
doi = "https://doi.org/10.1038/s41592-021-01275-4"
}
"""
