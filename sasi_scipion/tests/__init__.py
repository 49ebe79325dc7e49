"""The plugin's Scipion tests (``scipion3 tests sasi_scipion.tests.test_workflow``):
pyworkflow ``BaseTest`` cases on small simulated data, which the pytest suite runs too
(``tests/plugin/test_scipion_tests.py``)."""
