"""Let pytest explain failed asserts inside the shared helpers too."""

import pytest

pytest.register_assert_rewrite("core_support")
