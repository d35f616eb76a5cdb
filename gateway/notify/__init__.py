"""Reaching people: message templates, SMS and voice channels, and a loopback fake of Twilio's API."""
