"""scikit-learn drop-ins: ``MLPClassifier`` and ``MLPRegressor`` on fastnn's compiled kernels.

Change one import and keep the rest of the code: ``from sklearn.neural_network import
MLPClassifier`` becomes ``from fastnn.sklearn import MLPClassifier``.

``python -m fastnn.sklearn`` prints a side-by-side table of accuracy and fit time against
scikit-learn's own estimators.
"""

from ._classifier import MLPClassifier
from ._regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
