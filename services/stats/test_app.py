"""The cookie codec against SESSION-FORMAT.md's vectors (run: .venv/bin/python -m unittest)."""

import unittest

import app


class Cookies(unittest.TestCase):
    def test_vectors(self):
        self.assertEqual(app.signature("keyboard cat", "abc123"), "L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0")
        value = app.cookie_value("a=b; connect.sid=s%3Aabc123.L3URH8qEUlRhbJErOXuJ%2FR5i21GJUY02kERb2c2p5w0")
        self.assertEqual(app.unsign(value, ["keyboard cat"]), "abc123")
        self.assertEqual(
            app.unsign("s:q5t7q67lzOsCJDca-kvT63Yk6n6kVvpL.HdYuWAjEP+tclnYntVOYuJkkGIC3m1m8QPBwC7cbs8Y", ["other", "abc123"]),
            "q5t7q67lzOsCJDca-kvT63Yk6n6kVvpL",
        )

    def test_refused(self):
        self.assertIsNone(app.unsign("abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0", ["keyboard cat"]))
        self.assertIsNone(app.unsign("s:abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w", ["keyboard cat"]))
        self.assertIsNone(app.unsign("s:abc124.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0", ["keyboard cat"]))
        self.assertIsNone(app.unsign("s:abc123", ["keyboard cat"]))


if __name__ == "__main__":
    unittest.main()
