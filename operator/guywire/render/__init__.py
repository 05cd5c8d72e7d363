"""Renderers: findings and graphs to text, JSON, SARIF, JUnit, DOT and Mermaid. No rule logic here."""
