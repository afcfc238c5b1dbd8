"""Tests of the smarty_p1 integration."""
